# Funnel: product view → add to cart → checkout → purchase, by sessions or by users, with the
# conversion and drop-off of each step; per day. Category and brand choose which products count.

funnel_steps <- c(
  product_view = "Product view",
  add_to_cart = "Add to cart",
  checkout = "Checkout",
  purchase = "Purchase"
)

# What the funnel counts: sessions, or users as client ids or as logged-in user ids (the
# visitor_kind of the rollup).
funnel_units <- c("Sessions" = "sessions", "Users (client ids)" = "client", "Logged-in users" = "user")

funnel_ui <- function(id) {
  ns <- NS(id)
  tagList(
    p(class = "page-note", paste(
      "Sessions that viewed a product of the chosen category and brand, then also added one to",
      "the cart, then also started checkout, then also completed it; counted on the day they",
      "started. In users: the users with such a session, each counted once over the range."
    )),
    radioButtons(ns("unit"), "Count", choices = funnel_units, inline = TRUE),
    fluidRow(
      column(6, plotOutput(ns("steps_plot"), height = "340px")),
      column(6, plotOutput(ns("daily_plot"), height = "340px"))
    ),
    table_panel(ns, "steps", "Steps"),
    table_panel(ns, "daily", "Per day")
  )
}

funnel_server <- function(id, run, filters) {
  moduleServer(id, function(input, output, session) {
    unit <- reactive(if (is.null(input$unit)) "sessions" else input$unit)
    parameters <- reactive({
      chosen <- filters()[c("date_from", "date_to", "category", "brand")]
      if (unit() == "sessions") chosen else c(chosen, list(visitor_kind = unit()))
    })
    unit_column <- reactive(c(sessions = "sessions", client = "users", user = "logged_in_users")[[unit()]])

    # Per day: one column per step, named as funnel_steps.
    daily <- reactive({
      query <- if (unit() == "sessions") "funnel_daily" else "funnel_visitors_daily"
      data <- need_answer(run(query, parameters()), "No product views for the chosen filters.")
      counts <- data[, -1, drop = FALSE]
      names(counts) <- names(funnel_steps)
      data.frame(day = data$day, lapply(counts, as.numeric))
    })
    # Over the whole range: sessions add up over days, users do not (each counts once).
    totals <- reactive({
      if (unit() == "sessions") {
        totals <- colSums(daily()[names(funnel_steps)])
      } else {
        data <- need_answer(run("funnel_visitors_total", parameters()))
        totals <- stats::setNames(as.numeric(unlist(data[1, ])), names(funnel_steps))
      }
      validate(need(totals[[1]] > 0, "No product views for the chosen filters."))
      totals
    })
    steps <- reactive({
      counts <- totals()
      previous <- c(NA, counts[-length(counts)])
      table <- data.frame(
        step = unname(funnel_steps),
        count = unname(counts),
        step_conversion = unname(ifelse(is.na(previous), 1, counts / previous)),
        drop_off = unname(ifelse(is.na(previous), 0, 1 - counts / previous)),
        of_product_views = unname(counts / counts[[1]])
      )
      names(table)[2] <- unit_column()
      table
    })
    daily_table <- reactive({
      data <- daily()
      rate <- function(numerator, denominator) ifelse(denominator > 0, numerator / denominator, NA)
      data.frame(
        day = data$day,
        product_views = data$product_view,
        add_to_cart = data$add_to_cart,
        checkout = data$checkout,
        purchase = data$purchase,
        view_to_cart = rate(data$add_to_cart, data$product_view),
        cart_to_checkout = rate(data$checkout, data$add_to_cart),
        checkout_to_purchase = rate(data$purchase, data$checkout)
      )
    })

    output$steps_plot <- renderPlot({
      data <- steps()
      data$value <- data[[2]]
      data$step <- factor(data$step, levels = rev(data$step))
      data$label <- sprintf("%s  (%s)", format_count(data$value), format_share(data$step_conversion))
      unit_label <- names(funnel_units)[funnel_units == unit()]
      ggplot(data, aes(x = step, y = value)) +
        geom_col(fill = "#2c7fb8") +
        geom_text(aes(label = label), hjust = -0.05, size = 4.5) +
        coord_flip() +
        scale_y_continuous(expand = expansion(mult = c(0, 0.45)), labels = format_count) +
        labs(x = NULL, y = unit_label, title = paste(unit_label, "per step (step conversion)")) +
        dashboard_theme()
    })

    output$daily_plot <- renderPlot({
      data <- daily_table()
      long <- rbind(
        data.frame(day = data$day, rate = "view → cart", value = data$view_to_cart),
        data.frame(day = data$day, rate = "cart → checkout", value = data$cart_to_checkout),
        data.frame(day = data$day, rate = "checkout → purchase", value = data$checkout_to_purchase)
      )
      long$rate <- factor(long$rate, levels = c("view → cart", "cart → checkout", "checkout → purchase"))
      ggplot(long[!is.na(long$value), ], aes(x = day, y = value, colour = rate)) +
        geom_line(linewidth = 1) +
        geom_point(size = 2) +
        scale_y_continuous(labels = function(x) format_share(x), limits = c(0, 1)) +
        labs(x = NULL, y = NULL, colour = NULL, title = "Step conversion per day") +
        dashboard_theme() +
        theme(legend.position = "bottom")
    })

    serve_table(output, "steps", steps, "funnel-steps", c("step_conversion", "drop_off", "of_product_views"))
    serve_table(output, "daily", daily_table, "funnel-daily", c("view_to_cart", "cart_to_checkout", "checkout_to_purchase"))
  })
}
