"""The preflight: each stage's estimated peak GPU memory against the accelerator's, and each session's output
against what Kaggle keeps, before a push.

A run that goes out of GPU memory at its largest stage loses the whole session hours in. The estimate is
computed here on the CPU in seconds by `kernel.memory` (the model on the meta device, saved-tensor
accounting, no real convolution). A stage that does not fit is refused in one line naming the
accumulation that would; a stage whose accum is `auto` shows the one the kernel will take.

A session whose output passes Kaggle's 20 GB loses it too, at the end: its exported models are sized from
their parameter counts (`kernel.cost.output_bytes`), and a session too full is refused in one line naming the
--sessions that would fit.
"""
from dataclasses import replace

from kernel.config import GIB, Config, accelerator
from kernel.errors import UserError, first_line

from . import sessions

N_CLASSES = 10  # the competition's classes are not known here; the head is tiny next to the body either way


def preflight(cfg: Config, *, names: list[list[str]] | None = None, log=print) -> None:
    """Print the estimate of every member's every stage (as it trains them: a fixed-size model at its own
    size, `plan.models`); refuse the first that does not fit. Then the time plan: each model's estimated
    T4 hours (`kernel.cost`); and the output plan of the sessions, the members `names` lists in each (one
    session of them all by default)."""
    from kernel import cost, memory, model, plan
    acc = accelerator(cfg.accelerator)
    room = cfg.gpu_memory * 2**20 or acc.memory  # what a stage must fit: --gpu_memory, else the accelerator's
    for c in cfg.models(): model.check_arch(c.arch)
    configs = plan.models(cfg)
    log(f"memory preflight on {acc.name} ({room / GIB:.1f} GiB a GPU), fp16, estimated peak per stage:")
    seen = set()
    for c in configs:
        for s in c.stages:
            if (c.arch, s) in seen: continue
            seen.add((c.arch, s))
            try:
                accum = s.accum or memory.fit_accum(c.arch, N_CLASSES, s.size, s.bs, room)
                memory.estimate(c.arch, N_CLASSES, s.size, max(2, s.bs // (accum or 1)))
            except (RuntimeError, AssertionError) as e:  # e.g. too small for the downsampling
                raise UserError(f"stage {s}: {c.arch} cannot train at {s.size[0]}x{s.size[1]} "
                                f"({first_line(e)}); "
                                "use a size it takes (larger; for a fixed-size model such as Swin, its own) "
                                "or another --arch") from None
            if s.bs // (accum or 1) < 2:  # fastai's head (BatchNorm1d) cannot train on one image
                raise UserError(f"stage {s}: a micro-batch of one image (batch {s.bs} / accumulation "
                                f"{accum or 1}); training needs 2 or more a step: lower the accumulation "
                                "or raise the batch")
            if accum is None:
                least = memory.estimate(c.arch, N_CLASSES, s.size, 2).total
                raise UserError(f"stage {s} of {c.arch}: even two images at a time (the least training "
                                f"takes) need ~{least / GIB:.1f} GiB, more than {acc.name}'s "
                                f"{room / GIB:.1f} GiB; use a smaller size or --arch")
            need = memory.estimate(c.arch, N_CLASSES, s.size, s.bs // accum).total
            log(f"  {c.arch:<46} {s.size[0]:>4}x{s.size[1]:<4} batch {s.bs} = {accum} x {s.bs // accum:<4} "
                f"{need / GIB:5.1f} GiB  " + ("fits" if need <= room else "DOES NOT FIT")
                + ("  (accum auto)" if not s.accum else ""))
            if need > room:
                fit = memory.fit_accum(c.arch, N_CLASSES, s.size, s.bs, room)
                h, w = s.size
                fix = (f"write it {h}x{w}:{s.epochs}:{s.bs}:{fit} (accumulation {fit}) "
                       f"or {h}x{w}:{s.epochs}:{s.bs}:auto"
                       if fit else "use a smaller size or --arch")
                raise UserError(f"stage {s} of {c.arch} needs ~{need / GIB:.1f} GiB of GPU memory, more than "
                                f"{acc.name}'s {room / GIB:.1f} GiB; {fix}")
    n_test = cfg.test_count or cost.PADDY_TEST
    cost.show(cost.table(cfg, n_test=n_test), log)
    inference(cfg, n_test, log)
    output(cfg, names or [[m.name for m in cfg.members]], log)


def inference(cfg: Config, n_test: int, log=print) -> None:
    """Print the inference kernel's estimated T4 time over the test set the competition scores (in a code
    competition, its hidden one: --test_count), against the competition's run-time limit (--infer_limit);
    refuse one past it: the rerun would fail after the hours are spent."""
    from kernel import cost
    took, limit = cost.infer_seconds(cfg, n_test), cfg.infer_limit
    n = len(cfg.members) or 1
    given = f"{limit / 3600:g} h" if limit >= 3600 else f"{limit / 60:g} min"
    against = f" of the {given} limit: " + ("fits" if took <= limit else "DOES NOT FIT") if limit else \
        " (no --infer_limit given: a code competition's Code Requirements name one)"
    log(f"inference: ~{took / 3600:.2f} h on a T4 for {n_test} test images, {n} model(s){against}")
    if limit and took > limit:
        raise UserError(f"the inference kernel would take ~{took / 3600:.1f} h for {n_test} test images, past "
                        f"the competition's {given} limit; lower --tta, train fewer members, or make "
                        "the last stage smaller")


def session(cfg: Config, names: list[str]) -> Config:
    """The run of one session: `cfg` with only the members `names` (as --sessions splits them)."""
    return replace(cfg, members=tuple(m for m in cfg.members if m.name in names), sessions=1)


def output(cfg: Config, names: list[list[str]], log=print) -> None:
    """Print what each session (the members `names` lists for it) leaves in /kaggle/working, and the most it
    holds at once, against the 20 GB Kaggle keeps; refuse the first that passes it, naming the --sessions
    whose split (`sessions.split`, as build makes it) would fit every session."""
    from kernel import cost
    limit = cost.OUTPUT_LIMIT
    gb = lambda b: f"{b / 1e9:.1f} GB"
    kept = f"the {limit / 1e9:.0f} GB Kaggle keeps"
    log(f"output plan (what each session leaves in /kaggle/working, of {kept}; models by their parameter "
        "counts):")
    for k, group in enumerate(names, start=1):
        total, peak = cost.output_bytes(session(cfg, group))
        n = len(group) or 1
        log(f"  session {k:<3} {n:>2} model{'s' if n > 1 else ' '}  {gb(total):>7}, {gb(peak):>7} at its "
            "peak (an export's temp file)  " + ("fits" if peak <= limit else "DOES NOT FIT"))
        if peak <= limit: continue
        each = sessions.costs(cfg) if cfg.members else []
        fit = next((m for m in range(len(names) + 1, len(each) + 1)
                    if all(cost.output_bytes(session(cfg, [cfg.members[i].name for i in g]))[1] <= limit
                           for g in sessions.split(each, m))), None)
        fix = (f"put fewer members in each session: --sessions {fit}" if fit else
               "use a smaller --arch (or members with smaller ones)")
        raise UserError(f"session {k} ({', '.join(group) or cfg.arch}) would write ~{gb(total)} into "
                        f"/kaggle/working (~{gb(peak)} while an export is written), more than {kept} of a "
                        f"session's output; {fix}")
