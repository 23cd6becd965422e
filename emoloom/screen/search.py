"""The Tune searcher of a screen (imports Ray Tune and Optuna: load it lazily)."""
from __future__ import annotations

from optuna.exceptions import UpdateFinishedTrialError
from ray.tune.search.optuna import OptunaSearch


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch whose study survives a killed driver. A trial the study was told about after
    Tune's last snapshot completes again on resume; the study already holds its value."""

    def on_trial_complete(self, trial_id, result=None, error=False):
        try:
            super().on_trial_complete(trial_id, result=result, error=error)
        except UpdateFinishedTrialError:
            self._ot_trials.pop(trial_id, None)

    def on_trial_result(self, trial_id, result):
        try:
            super().on_trial_result(trial_id, result)
        except UpdateFinishedTrialError:
            pass  # the same trial, reporting again after a resume (see above)
