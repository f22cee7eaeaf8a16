# Activity: events by day of the week and hour of the day in the shop's time zone, and the
# busiest hours; with a category or brand, its product views and add-to-carts.

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
    parameters <- reactive(filters()[c("date_from", "date_to", "category", "brand")])
    cells <- reactive(need_answer(run("activity_heatmap", parameters()), "No events for the chosen filters."))
    busiest <- reactive({
      data <- need_answer(run("activity_busiest_hours", parameters()), "No events for the chosen filters.")
      data.frame(hour = sprintf("%02d:00–%02d:59", data$hour, data$hour), events = data$events, share = data$share)
    })

    output$zone <- renderText({
      f <- filters()
      events <- if (nzchar(f$category) || nzchar(f$brand)) {
        paste0("Product views and add-to-carts of ", scope_label(f))
      } else {
        "Every event"
      }
      paste0(events, ", by hour in the shop's time zone (", time_zone(), ").")
    })

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
