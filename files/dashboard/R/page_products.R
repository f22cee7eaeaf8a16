# Products: the most viewed products, their add-to-carts and view → cart conversion; the same
# per category and brand.

products_ui <- function(id) {
  ns <- NS(id)
  tagList(
    p(class = "page-note", "Conversion is add-to-cart clicks per product view."),
    plotOutput(ns("top_plot"), height = "480px"),
    table_panel(ns, "top", "Top 20 products by views"),
    plotOutput(ns("brands_plot"), height = "380px"),
    table_panel(ns, "brands", "By category and brand")
  )
}

products_server <- function(id, run, filters) {
  moduleServer(id, function(input, output, session) {
    parameters <- reactive(filters()[c("date_from", "date_to", "category", "brand")])
    top <- reactive(need_answer(run("products_top", parameters()), "No product views for the chosen filters."))
    brands <- reactive(need_answer(run("products_by_category_brand", parameters()), "No product views for the chosen filters."))

    output$top_plot <- renderPlot({
      data <- top()
      data$product <- factor(
        paste0(data$product_name, " (", data$product_id, ")"),
        levels = rev(paste0(data$product_name, " (", data$product_id, ")"))
      )
      ggplot(data, aes(x = product, y = as.numeric(views), fill = view_to_cart)) +
        geom_col() +
        coord_flip() +
        scale_fill_gradient(low = "#c6dbef", high = "#08519c", labels = format_share, name = "view → cart") +
        scale_y_continuous(labels = format_count) +
        labs(x = NULL, y = "product views", title = "Top products by views") +
        dashboard_theme()
    })

    output$brands_plot <- renderPlot({
      data <- brands()
      data$label <- paste(data$category, data$brand, sep = " · ")
      data <- head(data, 20)
      data$label <- factor(data$label, levels = rev(data$label))
      ggplot(data, aes(x = label, y = view_to_cart, fill = category)) +
        geom_col() +
        coord_flip() +
        scale_y_continuous(labels = format_share) +
        labs(x = NULL, y = "view → cart conversion", fill = NULL, title = "Conversion of the 20 most viewed categories and brands") +
        dashboard_theme()
    })

    serve_table(output, "top", top, "products-top", "view_to_cart")
    serve_table(output, "brands", brands, "products-by-category-brand", "view_to_cart")
  })
}
