"""A quantization report from end to end, for the CLI and the Python API alike: the request planned
(validated before any work, `request.py`), the models prepared, every cell measured on the executor the
request names (`schedule.py`, `mobilevit_deploy/scale.py`), the report written as JSON, Markdown and
HTML (`mobilevit_deploy/reports.py`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .report import Report
from .request import ReportRequest, plan_report


@dataclass(frozen=True)
class ReportRun:
    report: Report
    files: dict[str, Path]        # "json", "md", "html" -> the file written

    @property
    def failures(self) -> list[str]:
        """Every cell (or analysis) that has no figures, as "<model> <why>"."""
        return [f"{m.model} {line}" for m in self.report.models for line in m.failures]


def run_report(request: ReportRequest, on_step=lambda text: None,
               on_progress=lambda done, total: None, on_images=lambda done, total: None) -> ReportRun:
    """Plan, measure and write one report. A cell that fails is listed in its model's `failures` and
    the report is still written; a request that cannot be met raises before anything is built.
    `on_progress(done, total)` counts tasks, `on_images(done, total)` evaluated images."""
    from ..host import host
    from ..outputs import ensure_folder
    from ..pipeline import prepare_model
    from ..reports import write_report
    from ..scale import executor_for
    from ..versions import tool_versions
    from .schedule import measure_models

    plan = plan_report(request)
    r = plan.request
    prepared = [prepare_model(name, r.weights, weights_format=r.weights_format) for name in plan.models]
    if r.artifact_store is not None:
        ensure_folder(Path(r.artifact_store), "--artifact-store")
    executor = executor_for(r.workers, r.ray_address or None)
    ran_on = {**executor.describe(), "shard_size": r.shard_size,
              "artifact_store": str(r.artifact_store) if r.artifact_store is not None else None,
              "latency_host": host().describe(),         # latency is timed here, in the driver
              "latency_int8_caveat": host().int8_caveat()}
    on_step(f"starting {ran_on['description']}")
    with executor:
        results = measure_models([(p, Path(r.out) / "artifacts" / p.name) for p in prepared], plan.targets,
                                 plan.precisions, eval_data=r.eval_data, calib_data=r.calib_data,
                                 eval_limit=r.eval_limit, repeats=r.repeats, reuse=r.reuse, executor=executor,
                                 shard_size=r.shard_size, artifact_store=r.artifact_store, on_step=on_step,
                                 on_progress=on_progress, on_images=on_images, arm_cpus=r.arm_cpus,
                                 fallbacks=r.fallbacks)
    ran_on["tasks"] = executor.tally.to_dict()
    report = Report(r.command, tool_versions(), results, ran_on)
    return ReportRun(report, write_report(report, Path(r.out)))
