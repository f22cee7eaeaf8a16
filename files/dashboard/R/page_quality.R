# Data quality: the last ETL run, events loaded, rejected rows by reason, age of the newest data.

quality_ui <- function(id) {
  ns <- NS(id)
  tagList(
    p(class = "page-note", "Over all loads: the date, category and brand filters do not apply to this page."),
    uiOutput(ns("figures")),
    plotOutput(ns("rejects_plot"), height = "260px"),
    table_panel(ns, "rejects", "Rejected rows by reason", "Times in UTC."),
    table_panel(ns, "runs", "Last 20 ETL runs", "Times in UTC.")
  )
}

format_age <- function(seconds) {
  if (is.na(seconds)) return("–")
  if (seconds < 3600) return(sprintf("%.0f min", seconds / 60))
  if (seconds < 172800) return(sprintf("%.1f h", seconds / 3600))
  sprintf("%.1f days", seconds / 86400)
}

quality_server <- function(id, run, tick) {
  moduleServer(id, function(input, output, session) {
    last_run <- reactive({
      tick()
      need_answer(run("quality_last_run"), "No ETL run yet.")
    })
    freshness <- reactive({
      tick()
      need_answer(run("quality_freshness"))
    })
    rejects <- reactive({
      tick()
      need_answer(run("quality_rejects_by_reason"), "No rejected rows.")
    })
    runs <- reactive({
      tick()
      need_answer(run("quality_recent_runs"), "No ETL run yet.")
    })

    output$figures <- renderUI({
      run_row <- last_run()
      fresh <- freshness()
      stamp <- function(x) if (is.na(x)) "–" else format(x, "%Y-%m-%d %H:%M UTC", tz = "UTC")
      status_class <- if (run_row$status == "succeeded") "text-success" else "text-danger"
      fluidRow(
        column(3, figure_card("Last ETL run", run_row$status, stamp(run_row$started_at), status_class)),
        column(2, figure_card("Events loaded (last run)", format_count(run_row$events_loaded),
                              paste(format_count(run_row$duplicates_skipped), "duplicates skipped"))),
        column(2, figure_card("Rejected lines (last run)", format_count(run_row$rejected_lines),
                              paste(format_count(run_row$pending_objects), "objects pending"))),
        column(3, figure_card("Newest event", stamp(fresh$newest_event),
                              paste("lag", format_age(fresh$lag_seconds)))),
        column(2, figure_card("Hours awaiting refresh", format_count(fresh$hours_pending_refresh)))
      )
    })

    output$rejects_plot <- renderPlot({
      data <- rejects()
      data$reason <- factor(data$reason, levels = rev(data$reason))
      ggplot(data, aes(x = reason, y = as.numeric(rejected_rows))) +
        geom_col(fill = "#cb181d", width = 0.6) +
        coord_flip() +
        scale_y_continuous(breaks = count_breaks, labels = format_count) +
        labs(x = NULL, y = "rejected rows", title = "Rejected rows by reason") +
        dashboard_theme()
    })

    serve_table(output, "rejects", rejects, "quality-rejects-by-reason")
    serve_table(output, "runs", runs, "quality-etl-runs")
  })
}
