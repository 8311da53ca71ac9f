"""The numerical core of SMCS: pure numpy (no LangChain, no I/O), one module per stage.

Map of the method (see the project's SMCS_SPEC.md) to the modules and functions:

Stage 1, Retrieval-based Prior Selection (RPS)                                       `rps`
    step 1  `cosine_similarities`      S_i = cos(e, e_i) against the question bank
    step 2  `support_set`              eq. 3, the support set I (`support_mask`: as a mask,
                                       of one query or a batch; `support_threshold`)
    step 3  `prior_scores`             eq. 4, the prior V[m] of each model
    step 4  `select_top_k`             the K referencers

Stage 2, Exploration-Exploitation Posterior Enhancement (EPE)                        `epe`
    step 2  `prior_drop_distribution`  p = softmax(z-scored V) (exploration)
            `prior_drop_subsets`       n subsets of K - K_drop references
    step 4  `mean_pairwise_similarity` eq. 5, S_sim of each aggregation
            `token_logprobs`           the generated tokens' logprobs (for eq. 6)
            `perplexity`               eq. 6, PPL = exp(-mean logprob)
            `hybrid_scores`            eq. 7, S_total = S_sim + lambda * (1 - PPL)

Evaluation                                                                       `ranking`
            `pairwise_ranking_score`   eq. 8, how well priors rank correct over wrong models

Beyond the paper: the prior rules "shrunk" and "hier" (`PriorRule`), chosen by replay
evaluation (smcs_graph.offline.evaluation)                                         `rules`
            `global_accuracy`          each model's bank-wide accuracy g_m
            `support_weights`          max(S, 0), or exp((S - max S) / T) with a temperature
            `shrunk_prior_scores`      weighted local accuracy shrunk toward g_m
            `category_accuracy`        each model's accuracy per bank category, shrunk to g_m
                                       (`category_codes`, `shrunk_category_table`)
            `category_shares`          P(category | query) from the support set's categories
                                       (`category_share_matrix`: of a batch)
            `kernel_weights`           exp(-(1 - S) / T): an identical question weighs 1
            `hier_prior_scores`        local accuracy shrunk toward the inferred-category
                                       accuracy, itself shrunk toward g_m
            `shrink`                   the shrunk accuracy both rules end with

The learned rule "learned" (`PriorRule`): a per-model logistic model on a shared question map,
blended with the hier estimate                                                     `learned`
            `QuestionMap`, `fit_question_map`  f(q): whitened principal components of the bank
            `fit_model`, `fit_models`  sigmoid(theta_m . f(q) + b_m), each model fitted alone
            `fit_blend`, `Blend`       P = sigmoid(w_l logit(learned) + w_k logit(kNN) + w_0)
            `LearnedPrior`             the fitted rule of one bank: fit, refit one model, P(correct)

One interface for every prior rule                                            `prior_rules`
            `PriorRuleBase`            fit(bank) -> fitted; refit_model(name, bank) (that model's
                                       state alone); priors and calibrated p_correct of one
                                       query or a batch (`Evidence`); `BankArrays` the bank
            `PaperRule`, `ShrunkRule`, `HierRule`, `LearnedRule`  the four, by name in `RULES`
            `register`, `make_rule`    a new rule is one class and `@register`

Eq. 3, eq. 4 and both rules take one query (n,) or a batch (Q, n) with a `support` mask: the
graph (one question) and replay evaluation (every test question) call the same code.

Where the paper and the authors' released code differ, the paper is the default and the code's
behaviour is behind an explicit switch (`rule="authors"`, `mode="authors"`,
`include_self=True`).
"""

from smcs_graph.core._common import Rule
from smcs_graph.core.epe import (
    hybrid_scores,
    mean_pairwise_similarity,
    perplexity,
    prior_drop_distribution,
    prior_drop_subsets,
    token_logprobs,
)
from smcs_graph.core.learned import LearnedPrior
from smcs_graph.core.prior_rules import (
    RULES,
    BankArrays,
    Evidence,
    PriorRuleBase,
    make_rule,
    register,
)
from smcs_graph.core.ranking import pairwise_ranking_score
from smcs_graph.core.rps import (
    cosine_similarities,
    prior_scores,
    select_top_k,
    support_mask,
    support_set,
    support_threshold,
)
from smcs_graph.core.rules import (
    PriorRule,
    category_accuracy,
    category_codes,
    category_share_matrix,
    category_shares,
    global_accuracy,
    hier_prior_scores,
    kernel_weights,
    shrink,
    shrunk_category_table,
    shrunk_prior_scores,
    support_weights,
)

__all__ = [
    "RULES",
    "BankArrays",
    "Evidence",
    "LearnedPrior",
    "PriorRule",
    "PriorRuleBase",
    "Rule",
    "category_accuracy",
    "category_codes",
    "category_share_matrix",
    "category_shares",
    "cosine_similarities",
    "global_accuracy",
    "hier_prior_scores",
    "hybrid_scores",
    "kernel_weights",
    "make_rule",
    "mean_pairwise_similarity",
    "pairwise_ranking_score",
    "perplexity",
    "prior_drop_distribution",
    "prior_drop_subsets",
    "prior_scores",
    "register",
    "select_top_k",
    "shrink",
    "shrunk_category_table",
    "shrunk_prior_scores",
    "support_mask",
    "support_set",
    "support_threshold",
    "support_weights",
    "token_logprobs",
]
