"""Following a run from the laptop: `build.py status` shows each running member's last epoch line from the
run's log (GetKernelSessionLogsStream), `status --follow` prints the epoch lines as the log grows until the
run ends, then points at its learning curves. The real kaggle client against the stand-in, whose log of a
running run shows one line more at each call and ends the run with its last line.

build.py's main runs in this process (test_push's `here`), from the build made once for test_submit's module,
with Kaggle as push leaves it (`as_pushed`).
"""
import pytest

from kaggle_standin import TRAIN, training_output
from test_push import here, kaggle, ok, server, styled  # noqa: F401 (fixtures)
from test_submit import as_pushed, built  # noqa: F401 (fixtures)

# a training run's log of an ensemble of two, as kernel/ensemble.py prints it (each member's lines prefixed
# "[name] ", one line per epoch from kernel/callbacks.py's EpochEnd), among lines that are not epoch lines
EPOCHS = {
    "a": ["stage 1/2 32x24 epoch 1/1 (body frozen): train_loss 1.8000 valid_loss 1.6000 error_rate 0.7000 "
          "(41 s)",
          "stage 2/2 48x36 epoch 1/2: train_loss 1.2000 valid_loss 1.1000 error_rate 0.4000 (62 s)",
          "stage 2/2 48x36 epoch 2/2: train_loss 0.9000 valid_loss 0.8000 error_rate 0.3000 (61 s)"],
    "b": ["stage 1/2 32x24 epoch 1/1 (body frozen): train_loss 1.7000 valid_loss 1.5000 error_rate 0.6500 "
          "(43 s)",
          "stage 2/2 48x36 epoch 1/2: train_loss 1.1000 valid_loss 1.0000 error_rate 0.3500 (63 s)",
          "stage 2/2 48x36 epoch 2/2: train_loss 0.8000 valid_loss 0.7000 error_rate 0.2500 (60 s)"]}
LOG = ["kernel 0.1.0 from /kaggle/working/kit", "[a] started on GPU 0", "[b] started on GPU 1",
       *(f"[{m}] {EPOCHS[m][i]}" for i in range(3) for m in "ab"),
       "[a] finished", "[b] finished", "/kaggle/working/submission.csv"]


@pytest.fixture
def running(kaggle, tmp_path, built, monkeypatch):
    """Kaggle as push leaves it, the training run printing LOG; it runs until its log ends. A log stream
    quiet for 0.1 s is taken as all there is for now (the stand-in holds one open 0.3 s); the version's
    stand-in is returned."""
    monkeypatch.setattr("kit.kaggle.LOG_IDLE_S", 0.1)
    monkeypatch.setattr("kit.kaggle.POLL_MAX_S", 0.2)  # each look shows a line more: look again soon
    kaggle.log_lines[TRAIN] = LOG
    as_pushed(kaggle, tmp_path, built)
    return kaggle


def test_status_shows_each_members_last_epoch_line_and_reads_no_log_when_nothing_runs(running, here):
    kaggle = running
    version = kaggle.kernels[TRAIN]["versions"][0]
    version["states"] = ["QUEUED", "RUNNING", "COMPLETE"]
    said = ok(here("status")).splitlines()
    assert said[0] == f"kernel {TRAIN}: queued" and said[1].startswith("GPU quota")
    assert "GetKernelSessionLogsStream" not in kaggle.calls  # quick when nothing runs

    version["shown"] = 5  # the log so far: up to b's first epoch; this look shows one line more: a's second
    said = ok(here("status")).splitlines()
    assert said[:3] == [f"kernel {TRAIN}: running", f"  [a] {EPOCHS['a'][1]}", f"  [b] {EPOCHS['b'][0]}"]
    assert said[3].startswith("GPU quota this week")


def test_follow_prints_the_epoch_lines_as_the_log_grows_until_the_run_ends(styled, running, here, tmp_path):
    kaggle = running
    kaggle.fail("GetKernelSessionLogsStream", 500, skip=2)  # Kaggle falters while following: waited through
    kaggle.fail("GetKernelSessionStatus", drop=True, skip=4)
    said = ok(here("status", "--follow")).splitlines()
    # status's own lines: the log's first line only (the members are named by their epoch lines)
    assert said[:2] == [f"kernel {TRAIN}: running", "  no epoch finished yet"]
    start = said.index("following the runs' epoch lines until they end "
                       "(Ctrl-C stops following, not the runs)")
    followed = said[start + 1:]
    # every epoch line once, in the log's order, each as the log showed it; then the run's end
    assert followed[:6] == [f"kernel {TRAIN}: [{m}] {EPOCHS[m][i]}" for i in range(3) for m in "ab"]
    assert followed[6:] == [f"kernel {TRAIN}: complete",
                            "  learning curves: members/a/history.png, members/b/history.png; "
                            "`python build.py output` fetches them"]
    assert kaggle.calls.count("GetKernelSessionLogsStream") >= len(LOG)  # it grew between calls
    # Kaggle was asked for the run's log by user, slug and version label
    asked = kaggle.received("GetKernelSessionLogsStream")[-1]
    assert (asked["userName"], asked["kernelSlug"]) == tuple(TRAIN.split("/"))

    ok(here("output", "--out", str(tmp_path / "got")))  # what the pointer says
    for m in "ab":
        assert (tmp_path / "got" / f"members/{m}/history.png").read_bytes() == \
            training_output()[f"members/{m}/history.png"]
    said = ok(here("status")).splitlines()  # the run is over: no log read, the curves pointed at
    assert said[:2] == [f"kernel {TRAIN}: complete", followed[7]]
