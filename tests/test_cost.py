"""kernel.cost: a model's estimated T4 seconds, from FLOPs counted on the meta device."""
import pytest
import torch
from fastai.vision.learner import create_timm_model
from torch.utils.flop_counter import FlopCounterMode

from kernel import cost
from kernel.config import Config

pytestmark = pytest.mark.kernel  # the kit imports it at build; the kernel side may call it too


@pytest.mark.parametrize("arch, size", [("test_convnext", (96, 64)), ("resnet10t", (64, 48))])
def test_flops_on_meta_are_those_of_the_real_model_in_eval(arch, size):
    """The meta-device count (no weights) is torch's count of the real CPU forward of the same network.
    (Not a ViT: on the CPU attention runs a kernel the counter does not count; on meta, and CUDA, it does.)"""
    torch.manual_seed(0)
    net = create_timm_model(arch, 10, pretrained=False)[0].eval()
    with torch.no_grad(), FlopCounterMode(display=False) as real:
        net(torch.randn(1, 3, *size))
    assert cost.flops(arch, size) == real.get_total_flops() > 0


def test_road_to_the_top_part_2_recipe_costs_what_its_kaggle_run_took():
    """The calibration run (convnext_small_in22k, 1 frozen + 12 epochs at 256x192, Paddy's 10,407 images,
    20% validation, no test prediction): 33 min 2 s of cell time in the executed notebook."""
    cfg = Config.make(None, arch="convnext_small.fb_in22k", stages="256x192:13:64:1", freeze_epochs=1,
                      valid_pct=0.2, tta=0)
    no_test = cost.seconds(cfg, 10407, 0)
    assert no_test == pytest.approx(33 * 60 + 2, rel=0.03)
    # prediction: one plain pass over the test images at the last size, TTA 4 passes and the plain one
    assert cost.seconds(cfg, 10407, 3469) - no_test == pytest.approx(
        3469 * cost.flops(cfg.arch, (256, 192)) / cost.T4_FLOPS)
    tta = Config.make(None, **{**cfg.to_dict(), "tta": 4})
    assert cost.seconds(tta, 10407, 3469) - no_test == pytest.approx(
        5 * 3469 * cost.flops(cfg.arch, (256, 192)) / cost.T4_FLOPS)


def test_the_time_plan_has_a_row_per_member_at_the_stages_it_trains():
    """A fixed-size member with no stages of its own is costed at its native size in one stage; a member's
    own stages and weight are its own; more epochs at more pixels cost more."""
    cfg = Config.make(None, arch="resnet10t", stages="64x48:2:16:1,96x72:1:16:1", members=(
        "small; big stages=128x96:4:16:1 weight=2; swin arch=swin_tiny_patch4_window7_224"))
    rows = cost.table(cfg, 100, 10)
    assert [(r.name, r.arch, r.stages, r.weight) for r in rows] == [
        ("small", "resnet10t", "64x48:2:16:1,96x72:1:16:1", 1.0),
        ("big", "resnet10t", "128x96:4:16:1", 2.0),
        ("swin", "swin_tiny_patch4_window7_224", "224x224:3:16:1", 1.0)]
    small, big, swin = (r.seconds for r in rows)
    assert small < big < swin
    f = lambda a, s: cost.flops(a, s)
    # 100 images, 20 validated: 1 frozen epoch (1 forward), the rest 3; TTA 4 + 1 passes over 10
    assert swin == pytest.approx(f("swin_tiny_patch4_window7_224", (224, 224))
                                 * (80 * (1 + 2 * 3) + 3 * 20 + 5 * 10) / cost.T4_FLOPS)
    lines = []
    assert cost.show(rows, lines.append) == pytest.approx(small + big + swin)
    assert [line.split()[0] for line in lines[1:]] == ["small", "big", "swin", "total"]
