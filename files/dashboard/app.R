# Clickstream dashboards: one Shiny module per page (R/page_*.R, loaded by Shiny from R/), the
# SQL of every panel in queries.sql, read by name.
#
# Reads clickstream_dw as the read-only dashboard login, over one connection per browser session
# (R/warehouse.R). Where the warehouse is and the login's password come from a settings file the
# r_shiny role writes (mode 0600, owned by the service user), never from this code: KEY=VALUE
# lines, the path in CLICKSTREAM_DASHBOARD_SETTINGS.
library(shiny)
library(ggplot2)

queries <- load_queries("queries.sql")
# The warehouse is loaded hourly: figures are asked for again every five minutes.
refresh_milliseconds <- 5 * 60 * 1000

ui <- fluidPage(
  title = "Clickstream analytics",
  tags$head(tags$style(HTML(dashboard_css))),
  titlePanel("Clickstream analytics"),
  uiOutput("warehouse_status"),
  div(
    class = "filters",
    fluidRow(
      column(4, dateRangeInput("dates", "Dates (shop's time zone)", start = NULL, end = NULL, weekstart = 1)),
      column(3, selectInput("category", "Category", choices = c("All categories" = ""))),
      column(3, selectInput("brand", "Brand", choices = c("All brands" = ""))),
      column(2, div(style = "padding-top: 25px", strong("Events in the warehouse: "), textOutput("event_count", inline = TRUE)))
    )
  ),
  tabsetPanel(
    id = "page",
    type = "tabs",
    tabPanel("Overview", value = "overview", overview_ui("overview")),
    tabPanel("Funnel", value = "funnel", funnel_ui("funnel")),
    tabPanel("Products", value = "products", products_ui("products")),
    tabPanel("Activity", value = "activity", activity_ui("activity")),
    tabPanel("Journeys", value = "journeys", journeys_ui("journeys")),
    tabPanel("Data quality", value = "quality", quality_ui("quality"))
  )
)

server <- function(input, output, session) {
  warehouse <- new_warehouse(queries)
  session$onSessionEnded(warehouse$close)
  run <- warehouse$run

  tick <- reactive({
    invalidateLater(refresh_milliseconds)
    Sys.time()
  })
  events <- reactive({
    tick()
    run("warehouse_events")
  })
  bounds <- reactive({
    tick()
    run("data_bounds")
  })
  options <- reactive({
    tick()
    run("filter_options")
  })
  time_zone <- reactive({
    result <- bounds()
    if (result$ok) result$data$time_zone[[1]] else "unknown"
  })

  # The default range is the last 7 days with data, set once the warehouse has answered.
  dates_ready <- reactiveVal(FALSE)
  observe({
    result <- bounds()
    if (!dates_ready() && result$ok && !is.na(result$data$last_day[[1]])) {
      last <- as.Date(result$data$last_day[[1]])
      updateDateRangeInput(session, "dates", start = last - 6, end = last)
      dates_ready(TRUE)
    }
  })

  observe({
    result <- options()
    if (result$ok) {
      categories <- sort(unique(result$data$category))
      updateSelectInput(session, "category",
        choices = c("All categories" = "", stats::setNames(categories, categories)),
        selected = isolate(input$category)
      )
    }
  })
  observe({
    result <- options()
    category <- input$category
    if (result$ok) {
      rows <- if (isTruthy(category)) result$data[result$data$category == category, ] else result$data
      brands <- sort(unique(rows$brand))
      selected <- isolate(input$brand)
      updateSelectInput(session, "brand",
        choices = c("All brands" = "", stats::setNames(brands, brands)),
        selected = if (isTruthy(selected) && selected %in% brands) selected else ""
      )
    }
  })

  filters <- reactive({
    tick()
    # Until the warehouse has answered with its dates; when it cannot be reached, the pages run
    # (and say so) with whatever range the inputs hold.
    req(dates_ready() || !bounds()$ok, input$dates)
    dates <- sort(as.Date(input$dates))
    req(!anyNA(dates))
    list(
      date_from = format(dates[[1]]),
      date_to = format(dates[[2]]),
      days = as.integer(dates[[2]] - dates[[1]]) + 1L,
      category = if (is.null(input$category)) "" else input$category,
      brand = if (is.null(input$brand)) "" else input$brand
    )
  })

  output$warehouse_status <- renderUI({
    result <- events()
    if (!result$ok) {
      div(
        class = "alert alert-danger", role = "alert",
        strong("Cannot reach the warehouse."),
        " The figures below are unavailable until it answers again: ", result$message
      )
    }
  })

  output$event_count <- renderText({
    result <- events()
    if (result$ok) format(result$data$events[[1]], big.mark = ",", scientific = FALSE) else "unavailable"
  })

  overview_server("overview", run, filters)
  funnel_server("funnel", run, filters)
  products_server("products", run, filters)
  activity_server("activity", run, filters, time_zone)
  journeys_server("journeys", run, filters)
  quality_server("quality", run, tick)
}

shinyApp(ui, server)
