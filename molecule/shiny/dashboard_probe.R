# Runs the deployed dashboard's server function against the real warehouse (shiny::testServer)
# and prints what the page would show: the event count and the warehouse status message.
app_directory <- commandArgs(trailingOnly = TRUE)[[1]]
shiny::testServer(shiny::shinyAppDir(app_directory), {
  status <- output$warehouse_status
  cat("EVENTS=", output$event_count, "\n", sep = "")
  cat("STATUS=", if (is.null(status)) "" else gsub("\n", " ", as.character(status$html)), "\n", sep = "")
})
