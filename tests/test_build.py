"""`build.py build`: reproducible bytes, a clean notebook, coherent metadata, an offline-installable wheel,
and one clear line (with OUT untouched) for each kind of bad input."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import nbformat
import pytest
import torch
from safetensors.torch import load_file

from conftest import lay_out_hub

from kernel.errors import UserError, first_line
from kit import bundle, metadata, notebook

ROOT = Path(__file__).resolve().parents[1]
WHEEL = "paddy_kernel_kit-0.2.0-py3-none-any.whl"


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Two builds of the same tree into different folders; the first is returned,
    the second kept beside it."""
    tmp = tmp_path_factory.mktemp("builds")
    bundle.build(tmp / "a", user="alice", pretrained=False)
    bundle.build(tmp / "b", user="alice", pretrained=False)
    return tmp / "a"


@pytest.fixture
def templates(tmp_path) -> Path:
    """A copy of the repo's two templates, to break one way or another."""
    for name in (metadata.DATASET_FILE, metadata.KERNEL_FILE): shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def edit(templates: Path, name: str, **changes) -> None:
    meta = json.loads((templates / name).read_text())
    for k, v in changes.items():
        if v is None: meta.pop(k, None)
        else: meta[k] = v
    (templates / name).write_text(json.dumps(meta))


def make_wheel(tmp: Path, name: str, requires: list[str]) -> Path:
    """A tiny real wheel `name`-1.0 with the given requirements."""
    src = tmp / f"{name}-src"
    (src / name).mkdir(parents=True)
    (src / name / "__init__.py").write_text("VALUE = 42\n")
    (src / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name}"
        version = "1.0"
        dependencies = {json.dumps(requires)}
        """))
    subprocess.run([sys.executable, "-m", "pip", "--isolated", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(tmp), str(src)], check=True, capture_output=True)
    return next(tmp.glob(f"{name}-1.0-*.whl"))


def test_two_builds_are_byte_identical(built):
    a, b = files(built), files(built.parent / "b")
    assert sorted(a) == sorted(["dataset/" + WHEEL, "dataset/dataset-metadata.json", "kernel/kernel.ipynb",
                                "kernel/kernel-metadata.json", "infer/infer.ipynb",
                                "infer/kernel-metadata.json"])
    assert a == b


def test_wheel_holds_only_the_package(built):
    names = zipfile.ZipFile(built / "dataset" / WHEEL).namelist()
    assert {n.split("/")[0] for n in names} == {"kernel", "paddy_kernel_kit-0.2.0.dist-info"}
    assert ({n for n in names if n.startswith("kernel/")}
            == {f"kernel/{p.name}" for p in (ROOT / "kernel").glob("*.py")})


def test_notebook_is_clean_valid_and_has_a_kernelspec(built):
    nb = nbformat.read(built / "kernel" / "kernel.ipynb", as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) >= (4, 5)
    assert nb.metadata.kernelspec.name == "python3" and nb.metadata.language_info.name == "python"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert [c.id for c in nb.cells] == ["title", "parameters", "install", "train", "plots", "submission"]
    assert [c.id for c in nb.cells if "parameters" in c.metadata.get("tags", [])] == ["parameters"]
    # the parameters point at Kaggle's inputs: the competition and the kit's own dataset
    params = notebook.parameters(built / "kernel")
    assert (params["data"].endswith("/paddy-disease-classification")
            and params["dataset"].endswith("/alice/paddy-kernel-kit"))
    assert ((params["out"], params["preset"], params["weights"], params["target"])
            == ("/kaggle/working", "kaggle", None, None))
    assert params["overrides"] == {}
    # short: the training code is in the wheel, the notebook calls it
    assert ("kernel.ensemble.run(cfg, token=run_token)" in nb.cells[3].source
            and sum(len(c.source.splitlines()) for c in code) < 60)
    assert str(ROOT) not in (built / "kernel" / "kernel.ipynb").read_text()
    # the log says what ran: versions, and the GPUs (without starting CUDA in the notebook's own process)
    assert all(w in nb.cells[2].source for w in ("torch.__version__", "fastai.__version__",
                                                  "timm.__version__", "platform.python_version()",
                                                  "nvidia-smi"))


def test_the_inference_notebook_predicts_with_the_training_kernels_models(built):
    nb = nbformat.read(built / "infer" / "infer.ipynb", as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)
    assert [c.id for c in nb.cells] == ["title", "parameters", "install", "predict", "submission"]
    assert ("kernel.predict.run(models, data, out" in nb.cells[3].source
            and "train" not in nb.cells[3].source)
    params = notebook.parameters(built / "infer")
    assert (params["models"] == ["/kaggle/input/paddy-kernel-kit-train"] and params["tta"] is None
            and params["tokens"] is None)
    # found wherever Kaggle mounts the attached kernel's output
    assert "models = [mounted(m) for m in models]" in nb.cells[2].source


def test_metadata_is_coherent(built):
    ds = json.loads((built / "dataset" / "dataset-metadata.json").read_text())
    k = json.loads((built / "kernel" / "kernel-metadata.json").read_text())
    assert ds["id"] == "alice/paddy-kernel-kit" and ds["licenses"] == [{"name": "CC0-1.0"}]
    assert k["id"] == "alice/paddy-kernel-kit-train"
    assert k["dataset_sources"] == [ds["id"]]  # the kernel attaches the dataset
    assert k["competition_sources"] == ["paddy-disease-classification"]
    assert ((k["enable_internet"], k["enable_gpu"], k["kernel_type"], k["language"])
            == (False, True, "notebook", "python"))
    assert (built / "kernel" / k["code_file"]).is_file()
    assert k["machine_shape"] == "NvidiaTeslaT4"  # two T4s: the shape Kaggle runs GPU sessions on
    i = json.loads((built / "infer" / "kernel-metadata.json").read_text())
    assert (i["id"], i["title"], i["code_file"]) == (k["id"] + "-infer", k["title"] + "-infer", "infer.ipynb")
    assert i["kernel_sources"] == [k["id"]]  # the training kernel's output is attached: its exported models
    assert ({f: i[f] for f in ("dataset_sources", "competition_sources", "enable_internet", "enable_gpu",
                               "machine_shape")}
            == {f: k[f] for f in ("dataset_sources", "competition_sources", "enable_internet", "enable_gpu",
                                  "machine_shape")})


def test_wheel_installs_offline_into_an_empty_target(built, tmp_path):
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "--isolated", "install", "--no-index", "--no-deps",
                           "--target", str(target), str(built / "dataset" / WHEEL)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # not the repo: its kernel/ must not be the one imported
    done = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(target)!r}); "
                           "import kernel; print(kernel.__file__, kernel.__version__)"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    path, version = done.stdout.split()
    assert Path(path).parent == target / "kernel" and version == "0.2.0"


def test_weights_and_extra_wheels_are_shipped(tmp_path):
    weights = tmp_path / "convnext.pth"
    weights.write_bytes(b"not really weights")
    # numpy is here (as on Kaggle): its requirement is met
    extra = make_wheel(tmp_path, "pkk_demo", ["numpy"])
    out = bundle.build(tmp_path / "out", weights=weights, user="alice", wheels=[extra], pretrained=False)
    assert (sorted(p.name for p in (out / "dataset").iterdir())
            == sorted([WHEEL, extra.name, "dataset-metadata.json"]))
    # the weights in a dataset of their own, the architecture's, attached to the kernel
    held = out / "weights" / "convnext-small-fb-in22k-weights"
    assert sorted(p.name for p in held.iterdir()) == ["convnext.pth", "dataset-metadata.json"]
    assert (held / "convnext.pth").read_bytes() == b"not really weights"
    assert (json.loads((held / "dataset-metadata.json").read_text())["id"]
            == "alice/convnext-small-fb-in22k-weights")
    assert json.loads((out / "kernel" / "kernel-metadata.json").read_text())["dataset_sources"] == [
        "alice/paddy-kernel-kit", "alice/convnext-small-fb-in22k-weights"]
    # a file in that dataset, wherever it is mounted
    params = notebook.parameters(out / "kernel")
    assert params["weights"] == "convnext.pth"
    assert params["weights_datasets"] == ["/kaggle/input/datasets/alice/convnext-small-fb-in22k-weights"]


def previous_build(built: Path, tmp_path: Path) -> tuple[Path, dict]:
    """A copy of a finished build, to check that a failing build leaves it as it was."""
    out = tmp_path / "out"
    shutil.copytree(built, out)
    return out, files(out)


def test_extra_wheel_with_unmet_requirement_is_refused_and_out_kept(built, tmp_path):
    out, before = previous_build(built, tmp_path)
    extra = make_wheel(tmp_path, "pkk_needy", ["pkk-not-a-real-package>=1"])
    with pytest.raises(UserError, match="requirements are not met offline.*pkk-not-a-real-package"):
        bundle.build(out, user="alice", wheels=[extra], pretrained=False)
    assert files(out) == before and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


BAD_TEMPLATES = [
    (metadata.DATASET_FILE, "not json {", "is not valid JSON"),
    (metadata.DATASET_FILE, dict(id="paddy-kernel-kit"), "is not of the form user/slug"),
    (metadata.DATASET_FILE, dict(id="{username}/Paddy_Kit"), "slug must be lowercase"),
    (metadata.DATASET_FILE, dict(id="{username}/paddy"), "must be 6 to 50 characters"),
    (metadata.DATASET_FILE, dict(title="Paddy kit weights"),
     "resolves to the slug 'paddy-kit-weights', not the id's 'paddy-kernel-kit'"),
    (metadata.DATASET_FILE, dict(licenses=[]), "exactly one license"),
    (metadata.KERNEL_FILE, dict(id="{username}/paddy-kernel-kit-train/3"), "is not of the form user/slug"),
    (metadata.KERNEL_FILE, dict(title="Paddy training"), "resolves to the slug 'paddy-training'"),
    (metadata.KERNEL_FILE, dict(competition_sources=[]), "competition_sources must name the one competition"),
    (metadata.KERNEL_FILE, dict(competition_sources=None),
     "competition_sources must name the one competition"),
    (metadata.KERNEL_FILE, dict(enable_internet=True), "enable_internet is True; it must be false"),
    (metadata.KERNEL_FILE, dict(code_file="kernel.py"), "code_file 'kernel.py' must be a notebook"),
    (metadata.KERNEL_FILE, dict(machine_shape="NvidiaTeslaP100"), "NvidiaTeslaP100 is retired by Kaggle"),
    (metadata.KERNEL_FILE, dict(machine_shape="TpuV38"), "is a TPU: the kit trains on CUDA GPUs"),
    (metadata.KERNEL_FILE, dict(enable_gpu=False), "enable_gpu is False; it must be true"),
    (metadata.KERNEL_FILE, dict(dataset_sources=["no-slash"]), "is not of the form user/slug"),
]


@pytest.mark.parametrize("name,change,message", BAD_TEMPLATES)
def test_bad_template_is_one_line_and_leaves_out_as_it_was(built, tmp_path, templates, name, change, message):
    out, before = previous_build(built, tmp_path)
    if isinstance(change, str): (templates / name).write_text(change)
    else: edit(templates, name, **change)
    with pytest.raises(UserError) as e:
        bundle.build(out, user="alice", templates=templates, pretrained=False)
    assert message in str(e.value) and "\n" not in str(e.value) and name in str(e.value)
    assert files(out) == before


def test_title_resolving_to_the_slug_is_accepted(tmp_path, templates):
    # Kaggle: lowercase, non-alphanumerics -> '-'
    edit(templates, metadata.DATASET_FILE, title="Paddy Kernel Kit!")
    out = bundle.build(tmp_path / "out", user="bob", templates=templates, pretrained=False)
    assert json.loads((out / "dataset" / "dataset-metadata.json").read_text())["id"] == "bob/paddy-kernel-kit"


def test_username_comes_from_flag_then_env_then_kaggle_json(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    with pytest.raises(UserError, match="pass --user NAME"): metadata.username()
    (tmp_path / "kaggle.json").write_text(json.dumps({"username": "carol", "key": "0123secret"}))
    assert metadata.username() == "carol"
    monkeypatch.setenv("KAGGLE_USERNAME", "dave")
    assert metadata.username() == "dave" and metadata.username("erin") == "erin"
    with pytest.raises(UserError, match="characters a username cannot have"): metadata.username("a/b")


def test_cli_without_username_says_so_in_one_line(tmp_path):
    env = {**os.environ, "KAGGLE_CONFIG_DIR": str(tmp_path / "nokaggle")}
    env.pop("KAGGLE_USERNAME", None)
    done = subprocess.run([sys.executable, str(ROOT / "build.py"), "build", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 2 and not (tmp_path / "out").exists()
    assert ([l for l in done.stderr.splitlines() if l.startswith("error:")]
            == [done.stderr.strip().splitlines()[-1]])
    assert "no Kaggle username" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("weights,message", [("missing.pth", "no such file"),
                                             ("kaggle.json", "Kaggle credential file")])
def test_bad_weights_are_refused(tmp_path, weights, message):
    (tmp_path / "kaggle.json").write_text('{"username": "alice", "key": "secret"}')
    with pytest.raises(UserError, match=message):
        bundle.build(tmp_path / "out", weights=tmp_path / weights, user="alice", pretrained=False)
    assert not (tmp_path / "out").exists()


def test_out_that_is_not_a_build_folder_is_left_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="is not a build folder"):
        bundle.build(tmp_path, user="alice", pretrained=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def build_cli(tmp_path: Path, *args: str, hf_home: Path | None = None) -> subprocess.CompletedProcess:
    """`python build.py ARGS` as a user types it: no network to the hub (HF_HUB_OFFLINE),
    its cache in `hf_home`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home or tmp_path / "empty-hf-home")}
    return subprocess.run([sys.executable, str(ROOT / "build.py"), *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)


def one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and [l for l in lines if l.startswith("error:")] == [lines[-1]]
    return lines[-1]


def test_pretrained_weights_come_from_the_hub_cache_through_timm(tmp_path):
    """No --weights: the arch's pretrained tag, through timm and its hub cache (offline here),
    into the dataset."""
    state = lay_out_hub(tmp_path / "hf", "test_resnet.r160_in1k")
    done = build_cli(tmp_path, "build", "--user", "alice", "--out", str(tmp_path / "out"), "--arch",
                     "test_resnet.r160_in1k", hf_home=tmp_path / "hf")
    assert done.returncode == 0, done.stderr[-2000:]
    shipped = (tmp_path / "out" / "weights" / "test-resnet-r160-in1k-weights"
               / "test_resnet.r160_in1k.safetensors")
    got = load_file(str(shipped))
    assert set(got) == {k for k in state if not k.startswith("fc.")}  # the body: fastai puts its own head on
    assert all(torch.equal(got[k], state[k]) for k in got)
    params = notebook.parameters(tmp_path / "out" / "kernel")
    assert params["weights"] == "." and params["overrides"] == {"arch": "test_resnet.r160_in1k"}
    again = build_cli(tmp_path, "build", "--user", "alice", "--out", str(tmp_path / "again"), "--arch",
                      "test_resnet.r160_in1k", hf_home=tmp_path / "hf")
    assert again.returncode == 0 and files(tmp_path / "out") == files(tmp_path / "again")  # the same bytes


def test_no_network_and_nothing_cached_is_one_line_naming_the_fixes(tmp_path):
    line = one_line(build_cli(tmp_path, "build", "--user", "alice", "--out", str(tmp_path / "out"), "--arch",
                              "test_resnet.r160_in1k"))
    assert "cannot get the pretrained weights of test_resnet.r160_in1k (HF_HUB_OFFLINE is set)" in line
    assert "connect to the internet" in line and "--weights FILE" in line and "--no-pretrained" in line
    assert not (tmp_path / "out").exists()
    done = build_cli(tmp_path, "build", "--user", "alice", "--out", str(tmp_path / "out"), "--arch",
                     "test_resnet.r160_in1k", "--no-pretrained")
    assert done.returncode == 0 and notebook.parameters(tmp_path / "out" / "kernel")["weights"] is None


def test_the_accelerator_is_the_machine_shape_and_a_retired_one_is_refused(tmp_path):
    line = one_line(build_cli(tmp_path, "build", "--user", "alice", "--no-pretrained", "--accelerator",
                              "NvidiaTeslaP100"))
    assert "NvidiaTeslaP100 is retired by Kaggle: sessions run on NvidiaTeslaT4 instead" in line
    assert "use one of: NvidiaTeslaT4" in line and not (tmp_path / "build").exists()


@pytest.mark.parametrize("stages, message", [
    ("160x120:1:64:1,3000x3000:1:2:auto",
     "stage 3000x3000:1:2:auto of convnext_small.fb_in22k: even two images at a time "
     "(the least training takes) need ~"),
    ("160x120:1:2:2", "stage 160x120:1:2:2: a micro-batch of one image (batch 2 / accumulation 2); training "
     "needs 2 or more a step"),
])
def test_a_stage_that_cannot_train_even_two_images_at_a_time_is_one_line(tmp_path, stages, message):
    line = one_line(build_cli(tmp_path, "build", "--user", "alice", "--no-pretrained", "--out",
                              str(tmp_path / "out"), "--stages", stages))
    assert line.startswith(f"error: {message}"), line
    assert not (tmp_path / "out").exists()


def test_every_gpu_shape_kaggle_lists_has_its_cards_memory():
    from kernel.config import accelerator
    assert accelerator("NvidiaTeslaT4").memory == 15095 * 2**20  # what a T4 reports, not 15 GiB
    for shape in ("NvidiaTeslaT4Highmem", "NvidiaL4", "NvidiaL4X1", "NvidiaTeslaA100", "NvidiaH100",
                  "NvidiaRtxPro6000"):
        acc = accelerator(shape)
        assert acc.gpus >= 1 and acc.memory >= accelerator("NvidiaTeslaT4").memory
    for shape in ("TpuV5E8", "TpuV6E8", "NvidiaTeslaP100"):
        with pytest.raises(UserError): accelerator(shape)


def test_the_memory_preflight_refuses_a_stage_too_big_and_auto_takes_one_that_fits(tmp_path, capsys):
    with pytest.raises(UserError) as e:
        bundle.build(tmp_path / "out", {"stages": "160x120:1:64:1,896x672:1:64:1"}, user="alice",
                     pretrained=False)
    msg = str(e.value)
    assert (msg.startswith("stage 896x672:1:64:1 of convnext_small.fb_in22k needs ~")
            and "GiB of GPU memory, more than NvidiaTeslaT4's 14.7 GiB; write it 896x672:1:64:" in msg
            and "or 896x672:1:64:auto" in msg)
    assert not (tmp_path / "out").exists()
    accum = int(re.search(r"write it 896x672:1:64:(\d+)", msg)[1])
    assert accum > 1 and 64 % accum == 0
    capsys.readouterr()
    bundle.build(tmp_path / "out", {"stages": "160x120:1:64:1,896x672:1:64:auto"}, user="alice",
                 pretrained=False)
    table = capsys.readouterr().out
    assert re.search(rf"896x672 +batch 64 = {accum} x {64 // accum} +[0-9.]+ GiB  fits  \(accum auto\)",
                     table), table
    assert re.search(r"160x120 +batch 64 = 1 x 64 +[0-9.]+ GiB  fits", table)
    # the notebook keeps `auto`: the kernel resolves it against the GPU it gets, the same way
    assert (notebook.parameters(tmp_path / "out" / "kernel")["overrides"]["stages"]
            .endswith("896x672:1:64:auto"))


VIT_L = "vit_large_patch16_224.augreg_in21k_ft_in1k"  # 304M parameters: a 1.2 GB export


def test_the_rttt_preset_in_one_session_fits_kaggles_output():
    """Eight large models in one session: their exports, sized by their parameter counts, are ~7.2 GB, and
    ~8.4 GB while the largest (a ViT-L's, 1.2 GB) is written beside them: under the 20 GB."""
    from kernel.config import PRESETS, Config
    from kit.preflight import output
    cfg = Config.make("kaggle", **{**PRESETS["rttt"], "sessions": 1})
    lines = []
    output(cfg, [[m.name for m in cfg.members]], lines.append)
    assert re.fullmatch(r"  session 1 +8 models +7\.\d GB, +8\.\d GB at its peak \(an export's temp file\)"
                        r"  fits", lines[1]), lines


def test_a_session_whose_output_passes_20_gb_is_refused_in_one_line_naming_the_sessions_that_fit(tmp_path):
    members = "; ".join(f"v{i} arch={VIT_L} seed={i}" for i in range(16))  # 16 x 1.2 GB
    done = build_cli(tmp_path, "build", "--user", "alice", "--no-pretrained", "--out", str(tmp_path / "out"),
                     "--stages", "224x224:1:64:auto", "--members", members)
    assert re.search(r"^  session 1 +16 models +19\.\d GB, +20\.\d GB at its peak .*  DOES NOT FIT$",
                     done.stdout, re.M), done.stdout
    line = one_line(done)
    assert re.fullmatch(r"error: session 1 \(v0, v1, .*, v15\) would write ~19\.\d GB into /kaggle/working "
                        r"\(~20\.\d GB while an export is written\), more than the 20 GB Kaggle keeps of a "
                        r"session's output; put fewer members in each session: --sessions 2", line), line
    assert not (tmp_path / "out").exists()


@pytest.fixture(params=["refused", "silent"])
def dead_endpoint(request):
    """A loopback address with nothing behind it: a port that refuses connections, or one that takes them
    and never answers (listening, never accepting), as a captive network or a dropped route does."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    if request.param == "refused": s.close()
    else: s.listen(64)
    yield f"http://127.0.0.1:{port}"
    s.close()


FETCH = """
import sys, time
from pathlib import Path
import safetensors.torch, timm, torch  # imported first: what is timed is the network's part
from kernel.errors import UserError, first_line
from kit.weights import fetch
t = time.monotonic()
try: fetch("test_resnet.r160_in1k", Path(sys.argv[1]))
except UserError as e: print(f"{time.monotonic() - t:.2f}", e, sep="\\n")
"""


def test_no_network_is_one_whole_line_at_once(tmp_path, dead_endpoint):
    """The hub out of reach (HF_HUB_OFFLINE not set, nothing cached): one line naming the fixes, in seconds
    (huggingface_hub's own retries took ~46 s), its words whole."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": dead_endpoint}
    env.pop("HF_HUB_OFFLINE")
    done = subprocess.run([sys.executable, "-c", FETCH, str(tmp_path)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)
    seconds, line = done.stdout.strip().splitlines()
    assert float(seconds) < 5, (seconds, line)
    assert line.startswith(f"cannot reach the Hugging Face hub at {dead_endpoint} (") and line.endswith(
        "--no-pretrained to train from scratch")
    assert "connect to the internet once" in line and "--weights FILE" in line
    # and the CLI says it in one line (after the preflight), leaving nothing behind
    cli = subprocess.run([sys.executable, str(ROOT / "build.py"), "build", "--user", "alice", "--out",
                          str(tmp_path / "out"), "--arch", "test_resnet.r160_in1k"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=600)
    assert one_line(cli) == f"error: {line}" and not (tmp_path / "out").exists()


def test_a_long_library_message_is_cut_at_a_word_end():
    e = RuntimeError("check your connection and try again " * 10)
    cut = first_line(e, 60)
    assert len(cut) <= 60 and cut.endswith(" ...") and (cut[:-4] + " ") in str(e)
    assert cut[:-4].split()[-1] in ("connection", "and", "try", "again", "check", "your")


def test_the_inference_kernels_time_on_the_hidden_test_set_is_set_against_the_competitions_limit(tmp_path):
    """A code competition's rerun predicts its hidden test set (Cassava: ~15,000) under a run-time limit (9 h):
    build prints the estimate against it, and refuses, in one line and building nothing, a plan past it."""
    from kernel import cost
    from kernel.config import Config
    from kit.preflight import inference
    cfg = Config.make("kaggle", test_count=15000, infer_limit="9h")
    lines = []
    inference(cfg, 15000, lines.append)
    took = cost.infer_seconds(cfg, 15000)
    # each member's every image at its last stage's size, once per TTA pass and once plain, on a T4
    last = cfg.stages[-1].size
    assert took == pytest.approx(len(cfg.members) * cost.flops(cfg.arch, last) * (cfg.tta + 1) * 15000
                                 / cost.T4_FLOPS)
    assert lines == [f"inference: ~{took / 3600:.2f} h on a T4 for 15000 test images, 2 model(s) of the 9 h "
                     "limit: fits"]
    done = build_cli(tmp_path, "build", "--user", "alice", "--no-pretrained", "--out", str(tmp_path / "out"),
                     "--test_count", "15000", "--infer_limit", "10m")
    assert one_line(done) == (f"error: the inference kernel would take ~{took / 3600:.1f} h for 15000 test "
                              "images, past the competition's 10 min limit; lower --tta, train fewer "
                              "members, or make the last stage smaller")
    assert not (tmp_path / "out").exists()
