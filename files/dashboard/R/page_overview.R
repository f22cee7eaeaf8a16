# Overview: events, sessions, users, conversion, each against the previous period of the same
# length; events and sessions per day. With a category or brand: its product views and
# add-to-carts, the sessions with one of them, and those sessions' users.

overview_ui <- function(id) {
  ns <- NS(id)
  tagList(
    p(class = "page-note", textOutput(ns("scope"), inline = TRUE)),
    uiOutput(ns("figures")),
    plotOutput(ns("daily_plot"), height = "360px"),
    table_panel(ns, "daily", "Per day")
  )
}

overview_server <- function(id, run, filters) {
  moduleServer(id, function(input, output, session) {
    parameters <- reactive(filters()[c("date_from", "date_to", "category", "brand")])
    kpis <- reactive(need_answer(run("overview_kpis", parameters())))
    daily <- reactive(need_answer(run("overview_daily", parameters()), "No events for the chosen filters."))

    output$scope <- renderText({
      f <- filters()
      if (!nzchar(f$category) && !nzchar(f$brand)) {
        "Every event and session; sessions count on the day they started."
      } else {
        paste0(
          "Only ", scope_label(f), ": events are its product views and add-to-carts, sessions ",
          "those with one of them (counted on the day they started), users those sessions' users."
        )
      }
    })

    output$figures <- renderUI({
      data <- kpis()
      days <- filters()$days
      current <- data[data$period == "current", ]
      previous <- data[data$period == "previous", ]
      card <- function(label, field, formatter = format_count) {
        change <- change_line(current[[field]], previous[[field]], days)
        column(
          width = 2,
          figure_card(label, formatter(current[[field]]), change$text, change$class)
        )
      }
      fluidRow(
        card("Events", "events"),
        card("Sessions", "sessions"),
        card("Users (client ids)", "clients"),
        card("Logged-in users", "logged_in_users"),
        card("Converted sessions", "converted_sessions"),
        card("Conversion rate", "conversion_rate", format_share)
      )
    })

    output$daily_plot <- renderPlot({
      data <- daily()
      long <- rbind(
        data.frame(day = data$day, measure = "Events", value = as.numeric(data$events)),
        data.frame(day = data$day, measure = "Sessions", value = as.numeric(data$sessions))
      )
      ggplot(long, aes(x = day, y = value, fill = measure)) +
        geom_col(show.legend = FALSE) +
        facet_wrap(~measure, ncol = 1, scales = "free_y") +
        scale_fill_manual(values = c(Events = "#2c7fb8", Sessions = "#41ab5d")) +
        scale_y_continuous(labels = format_count) +
        labs(x = NULL, y = NULL, title = "Events and sessions per day") +
        dashboard_theme()
    })

    serve_table(output, "daily", daily, "overview-daily")
  })
}
