# Activity: events by day of the week and hour of the day in the shop's time zone, and the
# busiest hours.

weekday_names <- c("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

activity_ui <- function(id) {
  ns <- NS(id)
  tagList(
    p(class = "page-note", textOutput(ns("zone"), inline = TRUE)),
    plotOutput(ns("heatmap"), height = "380px"),
    table_panel(ns, "busiest", "Busiest hours of the day")
  )
}

activity_server <- function(id, run, filters, time_zone) {
  moduleServer(id, function(input, output, session) {
    dates <- reactive(filters()[c("date_from", "date_to")])
    cells <- reactive(need_answer(run("activity_heatmap", dates()), "No events in the chosen range."))
    busiest <- reactive({
      data <- need_answer(run("activity_busiest_hours", dates()), "No events in the chosen range.")
      data.frame(hour = sprintf("%02d:00–%02d:59", data$hour, data$hour), events = data$events, share = data$share)
    })

    output$zone <- renderText(paste0(
      "Hours in the shop's time zone (", time_zone(), "). Category and brand filters do not apply to this page."
    ))

    output$heatmap <- renderPlot({
      data <- cells()
      grid <- expand.grid(weekday = 1:7, hour = 0:23)
      data <- merge(grid, data, all.x = TRUE)
      data$events[is.na(data$events)] <- 0
      data$weekday <- factor(weekday_names[data$weekday], levels = rev(weekday_names))
      ggplot(data, aes(x = hour, y = weekday, fill = as.numeric(events))) +
        geom_tile(colour = "white") +
        scale_fill_gradient(low = "#f7fbff", high = "#08306b", labels = format_count, name = "events") +
        scale_x_continuous(breaks = 0:23, expand = c(0, 0)) +
        labs(x = "hour of the day", y = NULL, title = "Events by day of the week and hour") +
        dashboard_theme()
    })

    serve_table(output, "busiest", busiest, "activity-busiest-hours", "share")
  })
}
