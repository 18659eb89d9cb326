"""Evaluation: run the user-facing pipeline over a labelled split; metrics, fairness gaps, HTML report.

Modules: ``metrics`` (pure numpy/pandas/scipy functions of a predictions table), ``report`` (the
self-contained ``report.html``), ``evaluate`` (``evaluate_dataset``, behind
``facial-demographics evaluate``), ``release`` (the release rule and the model targets, applied to
``metrics.json`` files). Nothing is imported here, so the CLI pays for matplotlib only when
it evaluates.

``metrics.json`` keys (rates are fractions in [0, 1]; ages in years; None where undefined):

| key | meaning |
|---|---|
| `mae` | mean absolute age error over evaluated images with a known age |
| `mae_ci95` | `[lo, hi]` 95 % percentile-bootstrap CI of the MAE (1000 resamples, seeded) |
| `rmse` | root mean squared age error |
| `bias` | mean signed age error (predicted − true); > 0 means the model ages people up |
| `cs1`, `cs5`, `cs10` | share of images with \\|age error\\| ≤ 1, 5, 10 years |
| `bucket5_accuracy` | accuracy over the seed's 5 buckets (age // 25: 0-24, 25-49, 50-74, 75-99, 100+) |
| `bucket5_confusion` | 5×5 counts, rows = true bucket, columns = predicted bucket |
| `interval_coverage` | share of images whose true age lies inside the predicted interval (ends included) |
| `gender_accuracy` | share of correct gender predictions (images with a known gender) |
| `gender_recall` | `{male, female}`: recall of each true class |
| `gender_auc` | ROC-AUC of P(female) with female as positive (rank formula, ties count half) |
| `gender_confusion` | 2×2 counts, rows = true [male, female], columns = predicted |
| `gender_ece` | calibration of P(female): 10 equal bins on [0, 1], Σ (n_b/N)·\\|mean P − share female\\| |
| `gender_reliability` | the 10 bins behind the ECE: `lo`, `hi`, `n`, `mean_p`, `frac_female` |
| `n_age`, `n_gender` | how many images the age / gender metrics are computed over |
| `by_age_band` | per true-age band (0-12, 13-19, 20-39, 40-59, 60-79, 80+): `n`, `mae`, `bias`, `rmse`, |
| | `cs5`, `interval_coverage` |
| `age_band_weights` | share of each `by_age_band` band in the whole set: the reference age mix |
| `by_race` | per race (when the dataset has one): `n` and every key above, `mae` … `gender_reliability`, |
| | and `mae_age_std`: the group's per-band MAEs re-weighted to `age_band_weights` (removes the |
| | age-mix effect), `mae_age_std_missing`: reference bands the group has no face in |
| `by_gender` | per true gender: same keys as `by_race` |
| `gender_by_age_band` | per true-age band (0-5, 6-12, 13-19, 20-39, 40-59, 60+) and `20+`: `n`, |
| | `gender_accuracy`, `mean_confidence` (mean probability shown for the predicted gender), |
| | `overconfidence` (confidence − accuracy), `gender_ece`, `ece_noise_floor` (median ECE a perfectly |
| | calibrated model would show with the same probabilities on as many faces: small-set bias) |
| `gender_by_age_band_sentences` | the same in words, one sentence per band |
| `gaps` | `{race, gender}` → per metric (`mae`, `mae_age_std`, `bias`, `bucket5_accuracy`, |
| | `interval_coverage`, `gender_accuracy`, `gender_ece`): `min_group`, `min`, `max_group`, `max`, |
| | `gap`, `sentence` (only groups with ≥ 10 images are compared); `age_band` → `gender_accuracy`, |
| | `gender_ece` across the `gender_by_age_band` bands |
| `counts` | `images`, `evaluated` (face found or whole-image fallback), `no_face`, `fallback`, `unreadable` |
| `model` | the bundle's manifest `name`, `version`, `sha256` (of model.onnx) and `path` |
| `run` | dataset, format, how records were chosen (split, limit), `cropped`, `interval_level`, bootstrap |
| `domains` | with ``evaluate --domain``: per other dataset, `n`, `mae`, `mae_ci95`, `bias`, `cs5`, |
| | `interval_coverage`, `gender_accuracy`, `gender_recall`, `by_age_band` (`n`, `mae`, `bias`, |
| | `interval_coverage`), `counts`, `dataset`, `selection`, `report` (its own report, relative to this file) |
"""
