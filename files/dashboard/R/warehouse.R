# The warehouse as the dashboards see it: settings from the role's file, the named queries of
# queries.sql, and one connection per browser session that reconnects after a failure.

# Where the warehouse is and the read-only login's password: KEY=VALUE lines in a file the
# r_shiny role writes (mode 0600, owned by the service user); its path in
# CLICKSTREAM_DASHBOARD_SETTINGS. Never in this code.
settings_path <- function() {
  Sys.getenv("CLICKSTREAM_DASHBOARD_SETTINGS", "/etc/clickstream/dashboard.env")
}

read_settings <- function(path = settings_path()) {
  lines <- grep("^[A-Z_]+=", readLines(path, warn = FALSE), value = TRUE)
  # Split at the first "=" only: a password may contain any other character.
  stats::setNames(as.list(sub("^[^=]*=", "", lines)), sub("=.*$", "", lines))
}

# Every query of queries.sql by name: a query starts at "-- name: <name>"; comment lines go.
load_queries <- function(path) {
  lines <- readLines(path, warn = FALSE, encoding = "UTF-8")
  starts <- grep("^-- name: [A-Za-z0-9_]+\\s*$", lines)
  ends <- c(starts[-1] - 1, length(lines))
  queries <- Map(function(first, last) {
    body <- lines[seq.int(first + 1, length.out = max(0, last - first))]
    body <- body[!grepl("^\\s*--", body)]
    sub(";\\s*$", "", trimws(paste(body, collapse = "\n")))
  }, starts, ends)
  stats::setNames(queries, trimws(sub("^-- name: ", "", lines[starts])))
}

# One connection for a browser session, opened on the first query. run(name, params) answers
# list(ok = TRUE, data = <data.frame>) or list(ok = FALSE, message = <why>); it never throws.
# params are bound as quoted literals (DBI::sqlInterpolate), never pasted into the SQL.
new_warehouse <- function(queries) {
  state <- new.env(parent = emptyenv())
  state$connection <- NULL

  connect <- function() {
    settings <- read_settings()
    state$connection <- DBI::dbConnect(
      # One driver for the process; its limit is the number of sessions open at once.
      RPostgreSQL::PostgreSQL(max.con = 100L),
      host = settings$PGHOST,
      port = as.integer(settings$PGPORT),
      dbname = settings$PGDATABASE,
      user = settings$PGUSER,
      password = settings$PGPASSWORD
    )
  }

  close <- function() {
    if (!is.null(state$connection)) {
      try(DBI::dbDisconnect(state$connection), silent = TRUE)
      state$connection <- NULL
    }
  }

  query <- function(name, params) {
    if (is.null(state$connection)) connect()
    statement <- queries[[name]]
    if (is.null(statement)) stop("no query named ", name, " in queries.sql")
    if (length(params) > 0) {
      statement <- DBI::sqlInterpolate(DBI::ANSI(), statement, .dots = lapply(params, as.character))
    }
    DBI::dbGetQuery(state$connection, statement)
  }

  run <- function(name, params = list()) {
    had_connection <- !is.null(state$connection)
    result <- tryCatch(list(ok = TRUE, data = query(name, params)), error = function(error) {
      close()
      list(ok = FALSE, message = conditionMessage(error))
    })
    # A connection the server dropped (a restart): try once more on a new one.
    if (!result$ok && had_connection) {
      result <- tryCatch(list(ok = TRUE, data = query(name, params)), error = function(error) {
        close()
        list(ok = FALSE, message = conditionMessage(error))
      })
    }
    result
  }

  list(run = run, close = close)
}

# In a render function: stop with a clear message when the warehouse did not answer (the banner
# at the top of the page gives the reason).
need_answer <- function(result, empty_message = "No data for the chosen filters.") {
  validate(need(result$ok, "Cannot reach the warehouse: see the message at the top of the page."))
  validate(need(nrow(result$data) > 0, empty_message))
  result$data
}
