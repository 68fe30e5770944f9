"""The report's table cells (`report.tables`): wall times as median and range, non-finite steps with the runs that had them."""

from keras_stability.report.tables import nonfinite_text, seed_list, spread_text


def test_epoch_times_are_median_and_range_not_mean_and_interval():
    # Skewed by one slow epoch (another process on the machine): the median stays put.
    assert spread_text([0.21, 0.22, 0.23, 1.9]) == "0.23 (0.21–1.90)"
    assert spread_text([]) == "–"


def test_nonfinite_steps_total_and_runs():
    assert nonfinite_text([0, 0, 0]) == "0"
    assert nonfinite_text([0, 394, 2]) == "396 (2 runs)"
    assert nonfinite_text([5]) == "5 (1 run)"


def test_seed_lists_are_ranges_when_they_run_on():
    assert seed_list((0, 1, 2, 3, 4)) == "0–4" and seed_list((5, 7)) == "5, 7" and seed_list((0, 1)) == "0, 1"
