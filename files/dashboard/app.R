# Clickstream dashboards: a first page that proves the path from the warehouse to the browser.
#
# Reads clickstream_dw as the read-only dashboard login. Where the warehouse is and the login's
# password come from a settings file the r_shiny role writes (mode 0600, owned by the service
# user), never from this code: KEY=VALUE lines, the path in CLICKSTREAM_DASHBOARD_SETTINGS.
library(shiny)
library(ggplot2)

settings_path <- Sys.getenv("CLICKSTREAM_DASHBOARD_SETTINGS", "/etc/clickstream/dashboard.env")
refresh_milliseconds <- 60 * 1000

read_settings <- function(path) {
  lines <- grep("^[A-Z_]+=", readLines(path, warn = FALSE), value = TRUE)
  # Split at the first "=" only: a password may contain any other character.
  stats::setNames(as.list(sub("^[^=]*=", "", lines)), sub("=.*$", "", lines))
}

# Runs one query on a fresh connection: list(ok = TRUE, data = ...) or list(ok = FALSE, message = ...).
query_warehouse <- function(statement) {
  tryCatch(
    {
      settings <- read_settings(settings_path)
      connection <- DBI::dbConnect(
        RPostgreSQL::PostgreSQL(),
        host = settings$PGHOST,
        port = as.integer(settings$PGPORT),
        dbname = settings$PGDATABASE,
        user = settings$PGUSER,
        password = settings$PGPASSWORD
      )
      on.exit(DBI::dbDisconnect(connection), add = TRUE)
      list(ok = TRUE, data = DBI::dbGetQuery(connection, statement))
    },
    error = function(error) list(ok = FALSE, message = conditionMessage(error))
  )
}

ui <- fluidPage(
  titlePanel("Clickstream analytics"),
  uiOutput("warehouse_status"),
  h3("Events in the warehouse"),
  textOutput("event_count"),
  h3("Events per hour, last 7 days (reporting time zone)"),
  plotOutput("activity_plot", height = "320px")
)

server <- function(input, output, session) {
  snapshot <- reactive({
    invalidateLater(refresh_milliseconds)
    list(
      events = query_warehouse("SELECT count(*) AS events FROM public.clickstream_events"),
      activity = query_warehouse(paste(
        "SELECT r.hour_start AT TIME ZONE s.value AS local_hour, r.events",
        "FROM public.rollup_activity_hourly AS r",
        "CROSS JOIN public.warehouse_settings AS s",
        "WHERE s.name = 'reporting_time_zone' AND r.hour_start >= now() - interval '7 days'",
        "ORDER BY r.hour_start"
      ))
    )
  })

  output$warehouse_status <- renderUI({
    events <- snapshot()$events
    if (!events$ok) {
      div(
        class = "alert alert-danger", role = "alert",
        strong("Cannot reach the warehouse."),
        " The figures below are unavailable until it answers again: ", events$message
      )
    }
  })

  output$event_count <- renderText({
    events <- snapshot()$events
    if (events$ok) format(events$data$events[[1]], big.mark = ",") else "unavailable"
  })

  output$activity_plot <- renderPlot({
    activity <- snapshot()$activity
    validate(
      need(activity$ok, "Cannot reach the warehouse."),
      need(nrow(activity$data) > 0, "No events in the last 7 days.")
    )
    ggplot(activity$data, aes(x = local_hour, y = events)) +
      geom_col(fill = "#2c7fb8") +
      labs(x = NULL, y = "events") +
      theme_minimal(base_size = 14)
  })
}

shinyApp(ui, server)
