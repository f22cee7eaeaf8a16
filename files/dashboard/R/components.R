# Pieces every page uses: tables with a CSV download, figure cards, number formats.

format_count <- function(x) format(round(as.numeric(x)), big.mark = ",", scientific = FALSE, trim = TRUE)
# Axis breaks for counts: whole numbers only.
count_breaks <- function(limits) unique(floor(pretty(limits)))
format_share <- function(x) ifelse(is.na(x), "–", sprintf("%.1f%%", 100 * as.numeric(x)))

# "category laptop, brand Dell" for the chosen filters (either may be "" for all).
scope_label <- function(f) {
  parts <- c(
    if (nzchar(f$category)) paste("category", f$category),
    if (nzchar(f$brand)) paste("brand", f$brand)
  )
  paste(parts, collapse = ", ")
}

# A titled DT table with a "Download CSV" button.
table_panel <- function(ns, id, title, note = NULL) {
  div(
    class = "dashboard-table",
    h4(title, downloadButton(ns(paste0(id, "_csv")), "CSV", class = "btn-xs pull-right")),
    if (!is.null(note)) p(class = "text-muted", note),
    DT::DTOutput(ns(id))
  )
}

# Serve table `id` from the reactive `rows` (a data frame, already validated), with its CSV.
serve_table <- function(output, id, rows, file_stem, percent_columns = character(0)) {
  output[[id]] <- DT::renderDT({
    data <- rows()
    for (name in names(data)) {
      if (inherits(data[[name]], "POSIXt")) data[[name]] <- format(data[[name]], "%Y-%m-%d %H:%M:%S", tz = "UTC")
    }
    table <- DT::datatable(
      data,
      rownames = FALSE,
      options = list(pageLength = 10, dom = "tip", scrollX = TRUE)
    )
    if (length(percent_columns) > 0) table <- DT::formatPercentage(table, percent_columns, 1)
    numeric <- setdiff(names(data)[vapply(data, is.numeric, logical(1))], c(percent_columns, "hour", "weekday"))
    if (length(numeric) > 0) table <- DT::formatRound(table, numeric, digits = 0)
    table
  })
  output[[paste0(id, "_csv")]] <- downloadHandler(
    filename = function() paste0(file_stem, ".csv"),
    content = function(file) utils::write.csv(rows(), file, row.names = FALSE, na = "")
  )
}

# A figure card: a big number, its label, and a line under it (the change, for instance).
figure_card <- function(label, value, detail = NULL, detail_class = "text-muted") {
  div(
    class = "figure-card",
    div(class = "figure-value", value),
    div(class = "figure-label", label),
    if (!is.null(detail)) div(class = paste("figure-detail", detail_class), detail)
  )
}

# "+12.3% vs previous 7 days" and its colour class.
change_line <- function(current, previous, days, higher_is_better = TRUE) {
  if (is.na(previous) || previous == 0) {
    return(list(text = sprintf("no data in the previous %d days", days), class = "text-muted"))
  }
  change <- (current - previous) / previous
  up <- change >= 0
  list(
    text = sprintf("%s%.1f%% vs previous %d days", if (up) "+" else "", 100 * change, days),
    class = if (change == 0) "text-muted" else if (up == higher_is_better) "text-success" else "text-danger"
  )
}

dashboard_theme <- function() {
  theme_minimal(base_size = 14) +
    theme(panel.grid.minor = element_blank(), plot.title.position = "plot")
}

dashboard_css <- "
.figure-card { border: 1px solid #ddd; border-radius: 6px; padding: 12px 16px; margin-bottom: 12px;
  background: #fafafa; min-height: 104px; }
.figure-value { font-size: 26px; font-weight: 600; }
.figure-label { color: #555; }
.figure-detail { font-size: 13px; margin-top: 4px; }
.dashboard-table { margin-bottom: 24px; }
.dashboard-table h4 { margin-top: 18px; }
.filters { background: #f5f5f5; border-radius: 6px; padding: 10px 14px 0 14px; margin-bottom: 12px; }
.page-note { color: #777; font-size: 13px; margin: 6px 0 10px 0; }
"
