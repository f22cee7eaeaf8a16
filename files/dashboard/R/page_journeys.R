# Journeys: the most common paths through the shop, where sessions go after a chosen page, and
# the pages they enter and leave by.

journeys_ui <- function(id) {
  ns <- NS(id)
  tagList(
    p(class = "page-note", paste(
      "Sessions by the day they started. Category and brand filters do not apply to this page."
    )),
    plotOutput(ns("paths_plot"), height = "420px"),
    table_panel(ns, "paths", "Most common paths", paste(
      "A path is a session's events in order, without page views and clicks; a step repeated",
      "back to back counts once, and paths are cut after 8 steps (…)."
    )),
    h4("Page by page"),
    selectInput(ns("page"), "After the page", choices = character(0), width = "420px"),
    plotOutput(ns("next_plot"), height = "380px"),
    table_panel(ns, "next_pages", "Next page"),
    fluidRow(
      column(6, table_panel(ns, "entries", "Entry pages")),
      column(6, table_panel(ns, "exits", "Exit pages"))
    )
  )
}

journeys_server <- function(id, run, filters) {
  moduleServer(id, function(input, output, session) {
    dates <- reactive(filters()[c("date_from", "date_to")])
    paths <- reactive(need_answer(run("journey_paths", dates()), "No sessions in the chosen range."))
    pages <- reactive(run("journey_pages", dates()))

    observeEvent(pages(), {
      result <- pages()
      choices <- if (result$ok) result$data$page else character(0)
      selected <- if (isTruthy(input$page) && input$page %in% choices) input$page else choices[1]
      updateSelectInput(session, "page", choices = choices, selected = selected)
    })

    next_pages <- reactive({
      req(input$page)
      need_answer(run("journey_next_pages", c(dates(), list(page = input$page))), "No moves from this page in the chosen range.")
    })
    entries <- reactive(need_answer(run("journey_entry_pages", dates()), "No sessions in the chosen range."))
    exits <- reactive(need_answer(run("journey_exit_pages", dates()), "No sessions in the chosen range."))

    output$paths_plot <- renderPlot({
      data <- head(paths(), 10)
      wrapped <- vapply(data$path, function(path) paste(strwrap(path, 70), collapse = "\n"), "")
      data$label <- factor(wrapped, levels = rev(wrapped))
      ggplot(data, aes(x = label, y = sessions)) +
        geom_col(fill = "#6a51a3") +
        geom_text(aes(label = format_share(share)), hjust = -0.1, size = 4) +
        coord_flip() +
        scale_y_continuous(labels = format_count, expand = expansion(mult = c(0, 0.12))) +
        labs(x = NULL, y = "sessions", title = "The 10 most common paths") +
        dashboard_theme()
    })

    output$next_plot <- renderPlot({
      data <- next_pages()
      data$next_page <- factor(data$next_page, levels = rev(data$next_page))
      ggplot(data, aes(x = next_page, y = share)) +
        geom_col(fill = "#807dba") +
        geom_text(aes(label = format_share(share)), hjust = -0.1, size = 4) +
        coord_flip() +
        scale_y_continuous(labels = format_share, expand = expansion(mult = c(0, 0.15))) +
        labs(x = NULL, y = "share of moves", title = paste("Next page after", input$page)) +
        dashboard_theme()
    })

    serve_table(output, "paths", paths, "journeys-paths", c("share", "conversion"))
    serve_table(output, "next_pages", next_pages, "journeys-next-pages", "share")
    serve_table(output, "entries", entries, "journeys-entry-pages", "share")
    serve_table(output, "exits", exits, "journeys-exit-pages", "share")
  })
}
