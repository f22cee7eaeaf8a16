# Funnel: product view → add to cart → checkout → purchase, by sessions, with the conversion
# and drop-off of each step; per day. Category and brand choose which products count.

funnel_steps <- c(
  product_view_sessions = "Product view",
  add_to_cart_sessions = "Add to cart",
  checkout_sessions = "Checkout",
  purchase_sessions = "Purchase"
)

funnel_ui <- function(id) {
  ns <- NS(id)
  tagList(
    p(class = "page-note", paste(
      "Sessions that viewed a product of the chosen category and brand, then also added one to",
      "the cart, then also started checkout, then also completed it. Sessions count on the day",
      "they started."
    )),
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
    daily <- reactive({
      need_answer(
        run("funnel_daily", filters()[c("date_from", "date_to", "category", "brand")]),
        "No product views for the chosen filters."
      )
    })
    steps <- reactive({
      data <- daily()
      sessions <- vapply(names(funnel_steps), function(column) sum(as.numeric(data[[column]])), numeric(1))
      previous <- c(NA, sessions[-length(sessions)])
      data.frame(
        step = unname(funnel_steps),
        sessions = unname(sessions),
        step_conversion = unname(ifelse(is.na(previous), 1, sessions / previous)),
        drop_off = unname(ifelse(is.na(previous), 0, 1 - sessions / previous)),
        of_product_views = unname(sessions / sessions[[1]])
      )
    })
    daily_table <- reactive({
      data <- daily()
      data.frame(
        day = data$day,
        product_views = data$product_view_sessions,
        add_to_cart = data$add_to_cart_sessions,
        checkout = data$checkout_sessions,
        purchase = data$purchase_sessions,
        view_to_cart = data$add_to_cart_sessions / data$product_view_sessions,
        cart_to_checkout = ifelse(data$add_to_cart_sessions > 0, data$checkout_sessions / data$add_to_cart_sessions, NA),
        checkout_to_purchase = ifelse(data$checkout_sessions > 0, data$purchase_sessions / data$checkout_sessions, NA)
      )
    })

    output$steps_plot <- renderPlot({
      data <- steps()
      data$step <- factor(data$step, levels = rev(data$step))
      data$label <- sprintf("%s  (%s)", format_count(data$sessions), format_share(data$step_conversion))
      ggplot(data, aes(x = step, y = sessions)) +
        geom_col(fill = "#2c7fb8") +
        geom_text(aes(label = label), hjust = -0.05, size = 4.5) +
        coord_flip() +
        scale_y_continuous(expand = expansion(mult = c(0, 0.45)), labels = format_count) +
        labs(x = NULL, y = "sessions", title = "Sessions per step (step conversion)") +
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
