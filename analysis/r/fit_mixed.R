# Fit mixed models for analysis/lme4.py; nothing else calls this script.
#
#   Rscript fit_mixed.R spec.json result.json
#
# spec.json lists jobs. Each job names a CSV (written by analysis/lme4.py, all codes plain
# ASCII), the family (binomial: glmer, Laplace ML; gaussian: lmerTest::lmer, REML or ML with
# Satterthwaite df), the fixed part, a ladder of random-effect structures to try in order, and
# optionally a column whose values split the data into independent fits (many simulated
# studies in one R session: starting R and loading lme4 costs about a second).
#
# Ladder rule: take the first structure whose fit converges and is not singular. A singular
# linear mixed model is first refitted with a second optimiser (check_singular_fit). A singular
# fit names its degenerate terms (a zero on the diagonal of the term's relative covariance
# factor: a variance of zero or a correlation of +-1, the test lme4::isSingular applies); the
# same structure without them comes next when they are plain variance terms, and a later
# structure is skipped only when it would reach the same singular optimum (skipped_by). If no
# structure qualifies, the last fit that converged is used, singular or not, and the result
# says so.
# Only numbers and strings go back (JSON); no R object crosses.

args <- commandArgs(trailingOnly = TRUE)
# The packages are checked here, not by a separate R run first (that cost 1.4 s per report):
# exit status 3 with the missing names on the last line of stderr (analysis/lme4.py).
present <- vapply(c("lme4", "lmerTest", "jsonlite"), requireNamespace, TRUE, quietly = TRUE)
if (!all(present)) {
  message(paste(names(present)[!present], collapse = " "))
  quit(status = 3)
}
suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
  library(jsonlite)
})


term_group <- function(term) trimws(sub("\\)$", "", sub("^.*\\|", "", term)))

degenerate_terms <- function(fit, terms, tol = 1e-4) {
  tlist <- getME(fit, "Tlist")
  bad <- names(tlist)[vapply(tlist, function(m) any(abs(diag(as.matrix(m))) < tol), TRUE)]
  terms[vapply(terms, term_group, "") %in% bad]
}

# Start values for a structure cut from the one just fitted (the same terms without those
# estimated at zero): that fit's theta for the kept terms, and for a GLMM its fixed effects.
# If a variance is 0 at the larger model's optimum, the rest of that optimum is the optimum of
# the model without it (it maximises the likelihood over a larger set and lies in the smaller
# one), so the refit starts at its answer and the optimiser only confirms it. Only the starting
# point changes: the optimum is the one lme4 finds from its default start, to the optimiser's
# tolerance (test_analysis_lme4.py compares both). Not used for other rungs: a start away from
# the optimum saved nothing on the benchmark (glmer's own nAGQ = 0 stage finds a start as fast)
# and, near a zero variance, may stop on the other side of isSingular's tolerance than a cold
# fit. theta is assembled on the new model's own term order (lme4 sorts terms by their number
# of levels), matched term by term on grouping factor and columns.
start_values <- function(previous, formula, data, job) {
  reduced <- if (job$family == "binomial") {
    glFormula(formula, data = data, family = binomial, weights = n)
  } else {
    lFormula(formula, data = data, REML = isTRUE(job$reml))
  }
  key <- function(cnms) paste(names(cnms), vapply(cnms, paste, "", collapse = ","))
  old_cnms <- getME(previous, "cnms")
  sizes <- vapply(old_cnms, function(c) length(c) * (length(c) + 1L) / 2L, 1)
  blocks <- split(unname(getME(previous, "theta")), rep(seq_along(sizes), sizes))
  names(blocks) <- key(old_cnms)
  wanted <- key(reduced$reTrms$cnms)
  if (!all(wanted %in% names(blocks))) return(NULL)
  theta <- unlist(blocks[wanted], use.names = FALSE)
  if (job$family == "binomial") list(theta = theta, fixef = fixef(previous)) else
    list(theta = theta)
}

fit_once <- function(data, job, terms, previous = NULL, optimizer = "nloptwrap") {
  formula <- as.formula(paste(job$response, "~", job$fixed, "+", paste(terms, collapse = " + ")))
  notes <- character(0)
  started <- proc.time()[["elapsed"]]
  start <- if (is.null(previous)) NULL else
    tryCatch(start_values(previous, formula, data, job), error = function(e) NULL)
  fit <- withCallingHandlers(
    tryCatch({
      if (job$family == "binomial") {
        # Aggregated binomial cells: y = share correct, n = answers (weights). Same likelihood
        # as one row per answer, up to a constant, and half the rows or fewer.
        # calc.derivs = FALSE: the finite-difference Hessian costs about a fifth of the fit
        # on 1,000 listeners; the standard errors then come from lme4's RX approximation
        # (use.hessian is unavailable), within 0.1 % of the Hessian-based ones on the
        # benchmark. nloptwrap: half the time of the default bobyqa, same optimum.
        # glmer's own two stages stay: nAGQ = 0 (theta only, fixed effects by PIRLS) to find
        # the start, then Laplace (nAGQ = 1) over theta and the fixed effects from there.
        glmer(formula, data = data, family = binomial, weights = n, start = start,
              control = glmerControl(optimizer = "nloptwrap", calc.derivs = FALSE))
      } else {
        # Plain lme4 here; lmerTest's Satterthwaite machinery is added to the chosen fit only.
        lme4::lmer(formula, data = data, REML = isTRUE(job$reml), start = start,
                   control = lmerControl(optimizer = optimizer, calc.derivs = FALSE))
      }
    }, error = function(e) {
      notes <<- c(notes, paste("error:", conditionMessage(e)))
      NULL
    }),
    warning = function(w) {
      notes <<- c(notes, conditionMessage(w))
      invokeRestart("muffleWarning")
    },
    message = function(m) {
      notes <<- c(notes, trimws(conditionMessage(m)))
      invokeRestart("muffleMessage")
    })
  seconds <- proc.time()[["elapsed"]] - started
  if (!is.null(fit)) {
    lme4_notes <- c(fit@optinfo$conv$lme4$messages, notes)
    failed <- grepl("failed to converge|unidentifiable|convergence code", lme4_notes)
    converged <- !any(failed) && identical(as.integer(fit@optinfo$conv$opt), 0L)
  }
  if (!is.null(start) && (is.null(fit) || !converged)) {
    # The start values are a shortcut only: a structure is never rejected for a failure from
    # them. Fit it again from lme4's default start and let that fit decide.
    again <- fit_once(data, job, terms, NULL, optimizer)
    again$seconds <- again$seconds + seconds
    return(again)
  }
  if (is.null(fit)) {
    return(list(fit = NULL, formula = deparse1(formula), converged = FALSE, singular = NA,
                degenerate = character(0), notes = notes, seconds = seconds,
                started_from_previous = FALSE, optimizer = optimizer, criterion = NA_real_))
  }
  singular <- isSingular(fit)
  list(fit = fit, formula = deparse1(formula), converged = converged, singular = singular,
       degenerate = if (singular) degenerate_terms(fit, terms) else character(0),
       notes = unique(lme4_notes), seconds = seconds,
       started_from_previous = !is.null(start), optimizer = optimizer,
       # REML criterion (or deviance for ML and GLMMs): what the optimiser minimised.
       criterion = -2 * as.numeric(logLik(fit)))
}

# A singular linear mixed model is refitted from lme4's default start with a second optimiser
# before the ladder drops a term: nloptwrap (lme4's default, no derivative check) can stop at a
# false boundary optimum. Issue 21's refit: on the benchmark's arousal model it ended at REML
# criterion 56538.320 with the source SD at 2e-6, where bobyqa and Nelder-Mead reach 56537.932
# with a source SD of 0.30. bobyqa first; Nelder-Mead only if bobyqa fails (error or not converged).
# The fit with the lowest criterion is kept (ties: the first). Only for lmer: a GLMM fit costs
# several seconds on the benchmark, and the report has to finish in 20 s.
SECOND_OPTIMIZERS <- c("bobyqa", "Nelder_Mead")

check_singular_fit <- function(result, data, job, terms, confirmed = list()) {
  if (job$family == "binomial" || is.null(result$fit) || !result$converged ||
      !isTRUE(result$singular)) return(result)
  covered <- covered_by(result, terms, confirmed)
  if (!is.null(covered)) {
    result$checks <- list(list(optimizer = result$optimizer, converged = TRUE, singular = TRUE,
                               criterion = result$criterion, seconds = result$seconds,
                               covered_by = covered))
    return(result)
  }
  checks <- list()
  best <- result
  for (optimizer in SECOND_OPTIMIZERS) {
    other <- fit_once(data, job, terms, NULL, optimizer)
    checks[[length(checks) + 1]] <- list(
      optimizer = optimizer, converged = other$converged, singular = isTRUE(other$singular),
      criterion = other$criterion, seconds = other$seconds)
    if (!is.null(other$fit) && other$converged) {
      # 1e-6: optimisers that agree differ in the criterion's last digits only.
      if (other$criterion < best$criterion - 1e-6) best <- other
      break
    }
  }
  best$checks <- c(list(list(optimizer = result$optimizer, converged = TRUE,
                             singular = TRUE, criterion = result$criterion,
                             seconds = result$seconds)), checks)
  best$seconds <- sum(vapply(best$checks, function(c) c$seconds, 0))
  best
}

# A singular optimum the second optimiser has confirmed (from lme4's default start, over a
# structure's whole parameter space) covers a later structure that only drops terms from it:
# that structure's parameter space is a subset, so its optimum cannot be better than the
# confirmed one, and a fit reaching the confirmed criterion (to 1e-3, far below the 0.39 of
# the false optimum issue 21 found) is its optimum. The second optimiser is not run again
# there (3.2 s of the benchmark's arousal ladder). Returns the covering fit's formula or NULL.
covered_by <- function(result, terms, confirmed) {
  for (earlier in confirmed) {
    if (all(terms %in% earlier$terms) && result$criterion <= earlier$criterion + 1e-3) {
      return(earlier$formula)
    }
  }
  NULL
}

# May a later structure be skipped because of an earlier singular fit? Only when its optimum is
# that fit's optimum: the structure keeps a degenerate term and drops nothing but degenerate
# ones (a variance at 0 at the larger optimum leaves the rest of it the smaller model's optimum,
# so the structure would be singular again). A structure that also drops a term the data did
# support is fitted: without it the variance goes elsewhere, and a term at zero beside it need
# not be zero there (issue 21: after the maximal GLMM was singular in (1 | unit) and the
# correlated listener term, every rung with (1 | unit) was skipped and the ladder ended at
# (1 | participant), losing a clip term the data support).
skipped_by <- function(terms, singular_fits) {
  for (earlier in singular_fits) {
    bad <- intersect(terms, earlier$degenerate)
    if (length(bad) && all(terms %in% earlier$terms) &&
        all(setdiff(earlier$terms, terms) %in% earlier$degenerate)) return(bad)
  }
  character(0)
}

# lmerTest's Satterthwaite machinery (Kuznetsova, Brockhoff & Christensen 2017, J Stat Softw
# 82(13)) for a fit of plain lme4::lmer. as_lmerModLmerTest rebuilds the deviance function by
# evaluating the fit's stored call, lme4::lmer(formula, data = data, ...), in its caller's
# frame first, where the symbol `data` may name another data set: at this script's top level
# it was the last CSV read, so every job but the last (and with `by`, every part: the whole
# stacked CSV) got the df of other data (issue 21). The call is replaced by one that holds the
# objects themselves (formula, this fit's data, REML), so nothing is looked up by name.
with_satterthwaite <- function(fit, data) {
  fit@call <- as.call(list(quote(lme4::lmer), formula = formula(fit), data = data,
                           REML = isREML(fit)))
  lmerTest::as_lmerModLmerTest(fit)
}

summarise_fit <- function(fit, data) {
  if (is(fit, "lmerMod")) fit <- with_satterthwaite(fit, data)
  table <- summary(fit)$coefficients
  df <- if ("df" %in% colnames(table)) unname(table[, "df"]) else rep(NA_real_, nrow(table))
  varcorr <- as.data.frame(VarCorr(fit))
  list(
    term = rownames(table), estimate = unname(table[, "Estimate"]),
    se = unname(table[, "Std. Error"]), df = df,
    statistic = unname(table[, grep("value$", colnames(table))]),
    varcorr = list(grp = varcorr$grp, var1 = varcorr$var1, var2 = varcorr$var2,
                   vcov = varcorr$vcov, sdcor = varcorr$sdcor),
    nobs = nobs(fit), ngrps = as.list(ngrps(fit)), loglik = as.numeric(logLik(fit)),
    reml = isREML(fit)
  )
}

fit_ladder <- function(data, job) {
  data$participant <- factor(data$participant)
  data$unit <- factor(data$unit)
  data$condition <- factor(data$condition, levels = unlist(job$levels))
  data$condition <- droplevels(data$condition)
  single <- nlevels(data$condition) < 2 && job$fixed == "0 + condition"
  if (single) job$fixed <- "1"  # model.matrix refuses a one-level factor
  attempts <- list()
  singular_fits <- list()
  confirmed <- list()  # singular optima the second optimiser reached again (covered_by)
  chosen <- NULL
  fallback <- NULL
  queue <- job$ladder
  while (length(queue)) {
    rung <- queue[[1]]
    queue <- queue[-1]
    terms <- unlist(rung$terms)
    if (nlevels(data$condition) < 2) {
      # One condition: a by-group condition term is that group's intercept again.
      terms <- unique(sub("^\\(0 \\+ condition \\|", "(1 |", sub(":condition\\)$", ")", terms)))
    }
    blocked <- skipped_by(terms, singular_fits)
    if (length(blocked)) {
      attempts[[length(attempts) + 1]] <- list(
        name = rung$name, formula = "", status = "skipped", converged = FALSE,
        singular = FALSE, degenerate = list(),
        notes = list(paste("contains", paste(blocked, collapse = ", "),
                           "and drops only terms that were degenerate beside it in an",
                           "earlier fit: the same singular optimum")), seconds = 0)
      next
    }
    result <- check_singular_fit(fit_once(data, job, terms, rung$previous), data, job, terms,
                                 confirmed)
    status <- if (is.null(result$fit)) "error" else if (!result$converged) "not converged" else
      if (result$singular) "singular" else "accepted"
    attempts[[length(attempts) + 1]] <- list(
      name = rung$name, formula = result$formula, status = status,
      converged = result$converged, singular = isTRUE(result$singular),
      degenerate = as.list(result$degenerate), notes = as.list(result$notes),
      seconds = result$seconds, started_from_previous = result$started_from_previous,
      optimizer = result$optimizer, criterion = result$criterion,
      optimizers_tried = if (is.null(result$checks)) list() else result$checks)
    if (status == "singular") {
      singular_fits[[length(singular_fits) + 1]] <- list(terms = terms,
                                                         degenerate = result$degenerate)
      second <- result$checks[-1]
      if (any(vapply(second, function(c) isTRUE(c$converged), TRUE))) {
        # the second optimiser ran from lme4's default start and ended at this optimum too
        confirmed[[length(confirmed) + 1]] <- list(terms = terms, formula = result$formula,
                                                   criterion = result$criterion)
      }
    }
    scalar <- grepl("^\\(1 \\|", result$degenerate)
    kept <- setdiff(terms, result$degenerate)
    if (status == "singular" && length(result$degenerate) && all(scalar) && length(kept)) {
      # Only variance terms are at zero: the same structure without them comes next, so a
      # term the data do support (a clip term, say) is not lost with the ones they do not.
      queue <- c(list(list(name = paste(rung$name, "without",
                                          paste(result$degenerate, collapse = ", ")),
                           terms = as.list(kept), previous = result$fit)), queue)
    }
    if (status == "accepted") {
      chosen <- list(index = length(attempts), fit = result$fit)
      break
    }
    if (!is.null(result$fit) && result$converged) {
      fallback <- list(index = length(attempts), fit = result$fit)
    }
  }
  if (is.null(chosen)) chosen <- fallback
  if (is.null(chosen)) {
    return(list(chosen = NULL, attempts = attempts, summary = NULL))
  }
  summary <- summarise_fit(chosen$fit, data)
  if (single) summary$term <- paste0("condition", levels(data$condition))
  list(chosen = chosen$index, attempts = attempts, summary = summary)
}

# Sourced without arguments (the tests of the functions above), nothing runs.
main <- function(args) {
  spec <- fromJSON(args[[1]], simplifyVector = FALSE)
  cores <- if (is.null(spec$cores)) 1L else as.integer(spec$cores)
  # Every (job, part) pair is one task; with cores > 1 they run in forked workers, so a GLMM and
  # two rating models, or many simulated studies, fit side by side.
  tasks <- list()
  for (j in seq_along(spec$jobs)) {
    job <- spec$jobs[[j]]
    data <- read.csv(job$data, stringsAsFactors = FALSE, colClasses = c(condition = "character"))
    if (is.null(job$by)) {
      tasks[[length(tasks) + 1]] <- list(job = j, key = NULL, data = data)
    } else {
      parts <- split(data, data[[job$by]])
      for (key in names(parts)) {
        tasks[[length(tasks) + 1]] <- list(job = j, key = key, data = parts[[key]])
      }
    }
  }
  # A few tasks (a report's GLMM and rating ladders) all start at once, even if more than the
  # cores: which ladder is longest depends on the data (singular fits, second optimisers), and
  # the kernel's fair share finishes them together where a fixed order would leave one core
  # idle while the other runs two ladders one after the other (the 1,000 x 120 benchmark:
  # 26.8 s on one core against 12.4 s on the other). Many tasks (simulated studies): one per core.
  workers <- if (cores > 1 && length(tasks) <= 2 * cores) max(cores, length(tasks)) else cores
  fitted <- parallel::mclapply(tasks, function(task) {
    c(list(key = task$key), fit_ladder(task$data, spec$jobs[[task$job]]))
  }, mc.cores = workers, mc.preschedule = length(tasks) > 4 * cores)
  job_of <- vapply(tasks, function(task) task$job, 1L)
  result <- list(
    r_version = R.version.string,
    lme4_version = as.character(packageVersion("lme4")),
    lmerTest_version = as.character(packageVersion("lmerTest")),
    jobs = lapply(seq_along(spec$jobs), function(j) list(id = spec$jobs[[j]]$id,
                                                         fits = fitted[job_of == j]))
  )
  write_json(result, args[[2]], auto_unbox = TRUE, digits = NA, null = "null", na = "null")
}

if (length(args) == 2) main(args)
