"""Capacity planning: data-set sizes, FLOPs per phase, device profiles (built-in estimates and
measured throughput files), run and sweep plans, time-limit checks, SLURM time strings."""

import json

import pytest

from decodiff.harness.config import build_config
from decodiff.jobs.datasizes import data_size, manifest_size, published_size
from decodiff.jobs.errors import JobError
from decodiff.jobs.plan import Allocation, format_table, plan_run, plan_sweep, time_limit_warning
from decodiff.jobs.throughput import builtin_profile, gpu_key, load_throughput, measured_profile
from decodiff.jobs.walltime import format_time, parse_time
from decodiff.jobs.workload import measurement_gflops, unet_forward_gflops, workload


@pytest.mark.parametrize(
    "text, seconds",
    [("90", 5400), ("5:30", 330), ("4:00:00", 14400), ("2-00", 172800), ("1-02:30", 95400), ("1-00:00:10", 86410)],
)
def test_slurm_time_forms(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize("bad", ["", "2h", "0", "1:2:3:4", "-5"])
def test_bad_time(bad):
    with pytest.raises(JobError, match="--time"):
        parse_time(bad)


def test_format_time_rounds_up_to_minutes():
    assert format_time(61) == "00:02:00" and format_time(3600) == "01:00:00" and format_time(90000) == "1-01:00:00"


def test_published_sizes_and_subsets():
    mv = published_size("mvtec")
    assert (mv.train, mv.test, len(mv.categories)) == (3629, 1725, 15)
    sub = published_size("mvtec", ["bottle", "zipper"])
    assert (sub.train, sub.test) == (209 + 240, 83 + 151)
    ri = published_size("realiad")
    assert (ri.train, ri.test, len(ri.categories)) == (36465, 114585, 30)
    half = published_size("visa", ["candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1"])
    assert half.train == round(8659 / 2) and "pro rata" in half.source
    assert published_size("folder") is None


def test_manifest_sizes_win(tmp_path):
    from decodiff.datasets.manifest import Manifest, ShardInfo

    shards = [
        ShardInfo("a-train-0.tar", "train", "a", 40, 1, "0" * 64),
        ShardInfo("a-test-0.tar", "test", "a", 9, 1, "1" * 64),
        ShardInfo("b-train-0.tar", "train", "b", 7, 1, "2" * 64),
    ]
    Manifest("mvtec", ["a", "b"], shards, {}, [256, 256]).save(tmp_path)
    got = manifest_size(tmp_path)
    assert (got.train, got.test) == (47, 9) and "manifest" in got.source
    cfg = build_config(None, ["data.dataset=mvtec", f"data.shards={tmp_path}", "data.categories=[a]"]).to_dict()
    assert (data_size(cfg["data"]).train, data_size(cfg["data"]).test) == (40, 9)


def test_workload_counts_steps_and_phases_like_the_trainer():
    cfg = build_config(None, ["data.dataset=mvtec", "data.root=/nowhere"]).to_dict()
    w = workload(cfg)
    assert w.train_steps == 29 * 800  # ceil(3629 / 128) steps per epoch x 800 epochs
    names = [p.name for p in w.phases]
    assert names == ["vae fit", "latent cache", "train", "evaluate"]
    train = next(p for p in w.phases if p.name == "train")
    unet = unet_forward_gflops("L", 15, 32)
    assert train.gflops == pytest.approx(3 * unet * 23200 * 128) and train.distributed
    # a pretrained VAE is not fitted; max_steps caps training
    w2 = workload(
        build_config(
            None, ["data.dataset=mvtec", "data.root=/x", "vae.pretrained=/none", "train.max_steps=100"]
        ).to_dict()
    )
    assert [p.name for p in w2.phases][0] == "latent cache" and w2.train_steps == 100


def test_gpu_names_and_unknown_gpu():
    assert gpu_key("NVIDIA H100 80GB HBM3") == "h100" and gpu_key("NVIDIA A100-SXM4-80GB") == "a100"
    assert gpu_key("NVIDIA A10") == "a10" and gpu_key("NVIDIA L40S") == "l40s" and gpu_key("NVIDIA L4") == "l4"
    assert gpu_key("NVIDIA GeForce RTX 4090") == "rtx4090" and gpu_key("Tesla V100-SXM2-32GB") == "v100"
    with pytest.raises(JobError, match="unknown GPU"):
        builtin_profile("tpu-v5")


def test_more_gpus_shorter_wall_clock_same_work():
    cfg = build_config(None, ["data.dataset=mvtec", "data.root=/x", "vae.pretrained=/none"]).to_dict()
    w = workload(cfg)
    prof = builtin_profile("h100")
    one = plan_run(w, prof, Allocation(nodes=1, gpus_per_node=1))
    many = plan_run(w, prof, Allocation(nodes=4, gpus_per_node=8))
    t1, t32 = one.runs[0].phase_seconds["train"], many.runs[0].phase_seconds["train"]
    assert t32 == pytest.approx(t1 / (32 * 0.85))
    assert (
        many.wall_seconds < one.wall_seconds
        and many.runs[0].phase_seconds["evaluate"] == one.runs[0].phase_seconds["evaluate"]
    )
    assert one.gpu_hours == pytest.approx(one.wall_seconds / 3600)
    assert many.gpu_hours == pytest.approx(many.wall_seconds * 32 / 3600)
    # bf16 uses the half-precision peak: faster training than fp32 (TF32) on the same GPU
    bf = workload(
        build_config(
            None, ["data.dataset=mvtec", "data.root=/x", "vae.pretrained=/none", "train.mixed_precision=bf16"]
        ).to_dict()
    )
    assert plan_run(bf, prof, Allocation()).runs[0].phase_seconds["train"] < t1
    table = format_table(many)
    assert "ESTIMATE" in table and "4 node(s) x 8 GPU(s)" in table and "GPU-hours" in table


def _throughput_file(tmp_path, rate):
    path = tmp_path / "speed.json"
    path.write_text(
        json.dumps(
            {
                "format": "decodiff-throughput/1",
                "device": "NVIDIA H100 80GB HBM3",
                "entries": [
                    {"model": "L", "latent_size": 32, "mixed_precision": "no", "train_samples_per_second": rate}
                ],
            }
        )
    )
    return path


def _measured(path):
    return measured_profile(
        load_throughput(path),
        lambda m: measurement_gflops(m.model, m.latent_size, 4, m.num_classes)[0],
        lambda m: measurement_gflops(m.model, m.latent_size, 4, m.num_classes, m.reverse_steps)[1],
    )


def test_measured_throughput_sets_the_training_time(tmp_path):
    cfg = build_config(None, ["data.dataset=mvtec", "data.root=/x", "vae.pretrained=/none"]).to_dict()
    w = workload(cfg)
    p100 = _measured(_throughput_file(tmp_path, 100.0))
    run = plan_run(w, p100, Allocation())
    # 23,200 steps x 128 samples at a measured 100 samples/s (same model and latent size)
    assert run.runs[0].phase_seconds["train"] == pytest.approx(23200 * 128 / 100.0, rel=1e-6)
    assert p100.measured and "measured" in p100.source and "ESTIMATE" not in format_table(run)
    p200 = _measured(_throughput_file(tmp_path, 200.0))
    assert plan_run(w, p200, Allocation()).runs[0].phase_seconds["train"] == pytest.approx(
        23200 * 128 / 200.0, rel=1e-6
    )
    # another preset on the measured GPU is priced by its FLOPs
    xl = workload(
        build_config(None, ["data.dataset=mvtec", "data.root=/x", "vae.pretrained=/none", "model.size=XL"]).to_dict()
    )
    ratio = unet_forward_gflops("XL", 15, 32) / unet_forward_gflops("L", 15, 32)
    assert plan_run(xl, p100, Allocation()).runs[0].phase_seconds["train"] == pytest.approx(
        23200 * 128 / 100.0 * ratio, rel=1e-6
    )


@pytest.mark.parametrize(
    "content, match",
    [
        ("not json", "not valid JSON"),
        ('{"device": "x", "entries": []}', "entries"),
        ('{"device": "x", "entries": [{"model": "L"}]}', "missing 'latent_size'"),
        ('{"device": "x", "entries": [{"model": "L", "latent_size": 32, "train_samples_per_second": -1}]}', "positive"),
        (
            '{"device": "x", "entries": [{"model": "L", "latent_size": 32, "train_samples_per_second": 5, '
            '"mixed_precision": "fp8"}]}',
            "mixed_precision",
        ),
        ('{"format": "other/2", "device": "x", "entries": []}', "format"),
    ],
)
def test_bad_throughput_files(tmp_path, content, match):
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(JobError, match=match):
        load_throughput(path)
    with pytest.raises(JobError, match="not found"):
        load_throughput(tmp_path / "missing.json")


def test_paper_sweep_plan_real_iad_dominates():
    from decodiff.harness.planning import sweep_allocation, sweep_workloads
    from decodiff.harness.sweep.spec import plan_sweep as expand

    sweep = expand("paper-main")
    trials = sweep_workloads(sweep)
    prof = builtin_profile("h100")
    serial = plan_sweep("paper-main", trials, prof, sweep_allocation(sweep, 1, 1))
    wide = plan_sweep("paper-main", trials, prof, sweep_allocation(sweep, 1, 8))
    by = {r.workload.data.dataset: r for r in serial.runs}
    assert set(by) == {"mvtec", "visa", "mpdd", "realiad"}
    assert by["realiad"].workload.model == "XL" and by["realiad"].workload.data.train == 36465
    assert max(serial.runs, key=lambda r: r.seconds) is by["realiad"]
    assert serial.wall_seconds == pytest.approx(sum(r.seconds for r in serial.runs))  # one GPU: one after another
    assert wide.wall_seconds == pytest.approx(by["realiad"].seconds) and wide.concurrent == 8  # 4 trials side by side


def test_inference_only_sweep_trains_once():
    from decodiff.harness.planning import sweep_allocation, sweep_workloads
    from decodiff.harness.sweep.spec import plan_sweep as expand

    sweep = expand("table3-strategy-steps")
    result = plan_sweep("t3", sweep_workloads(sweep), builtin_profile("a100"), sweep_allocation(sweep, 1, 1))
    shared = [r for r in result.runs if r.shared_training]
    assert len(result.runs) == 7 and len(shared) == 6  # one training, seven evaluations
    assert all(r.phase_seconds["train"] == 0 for r in shared)


def test_time_limit_warning():
    w = workload(build_config(None, ["data.dataset=mvtec", "data.root=/x", "vae.pretrained=/none"]).to_dict())
    plan = plan_run(w, builtin_profile("a100"), Allocation(nodes=1, gpus_per_node=8))
    need = plan.wall_seconds
    assert time_limit_warning(plan, None) is None
    assert time_limit_warning(plan, format_time(need * 2)) is None
    short = time_limit_warning(plan, "30")
    assert short and "shorter than" in short and "requeued" in short
    assert "within 20%" in time_limit_warning(plan, str(int(need * 1.1 / 60) + 1))


def test_sweep_estimates_and_plans_count_the_same_flops_steps_and_images():
    """One cost model: a sweep's dry-run estimate and `decodiff plan` of the same trials agree on
    training steps, test images and UNet FLOPs per call (models/flops.unet_gflops)."""
    from decodiff.harness.planning import sweep_workloads
    from decodiff.harness.sweep.cost import estimate
    from decodiff.harness.sweep.spec import plan_sweep as expand
    from decodiff.models.flops import TRAINING_FLOPS_FACTOR, unet_gflops

    sweep = expand("tiny-grid")
    cost = estimate(sweep, {})
    loads = sweep_workloads(sweep)
    first = {}
    for w in loads:
        first.setdefault(w.group, w)
    assert cost["train_steps"] == sum(w.train_steps for w in first.values())
    assert cost["eval_images"] == sum(w.data.test for w in loads)
    unet = {w.label: unet_gflops(w.model, w.latent_size) for w in loads}
    assert cost["train_tflop"] == round(
        sum(TRAINING_FLOPS_FACTOR * unet[w.label] * w.train_steps * w.batch_size for w in first.values()) / 1e3, 3
    )
    steps = {t.label: t.config.infer.reverse_steps for t in sweep.trials}
    assert cost["eval_unet_calls"] == sum(w.data.test * steps[w.label] for w in loads)
    assert unet_forward_gflops("L", 15, 32) == unet_gflops("L", 32) == unet_forward_gflops("L", 1, 32)


def test_latent_cache_phase_counts_the_encodings_the_cache_makes():
    from decodiff.jobs.workload import cache_variants

    base = ["data.dataset=mvtec", "data.root=/x", "vae.pretrained=/none"]
    exact = workload(build_config(None, base).to_dict())  # cache_augment=exact, +-4 px: 9 x 9 shifts
    phase = next(p for p in exact.phases if p.name == "latent cache")
    assert "3629 images x 81 variants" in phase.detail
    rot = build_config(None, base + ["train.rotate180=true"]).to_dict()
    assert cache_variants(rot["train"]) == 162
    drawn = build_config(None, base + ["train.cache_augment=variants", "train.cache_variants=3"]).to_dict()
    assert cache_variants(drawn["train"]) == 3
    cache = next(p for p in workload(drawn).phases if p.name == "latent cache")
    assert cache.gflops == pytest.approx(phase.gflops * 3 / 81)


def test_a_manifest_already_read_gives_counts_and_image_side(tmp_path):
    from decodiff.datasets.manifest import Manifest, ShardInfo
    from decodiff.jobs.datasizes import image_side

    shards = [
        ShardInfo("a-train-0.tar", "train", "a", 12, 1, "0" * 64),
        ShardInfo("a-test-0.tar", "test", "a", 5, 1, "1" * 64),
    ]
    man = Manifest("mvtec", ["a"], shards, {}, [320, 320])
    data = build_config(
        None, ["data.dataset=mvtec", "data.shards=https://host/set", "data.resize=null", "data.crop=null"]
    ).to_dict()["data"]
    size = data_size(data, man)
    assert (size.train, size.test, size.image_size) == (12, 5, 320) and image_side(data, size) == 320
    assert image_side({**data, "resize": 288, "crop": 256}, size) == 256
