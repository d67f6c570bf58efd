"""decodiff.jobs: cluster jobs and capacity planning.

- sbatch.py: sbatch scripts (multi-node Accelerate training, the benchmark, a Ray cluster for
  sweeps; job arrays; preemption -> checkpoint -> requeue -> resume).
- slurm.py, ray_jobs.py: submit, status, logs, stop through SLURM's commands and Ray's Job
  Submission API; records.py: the local index of submitted jobs.
- plan.py with workload.py (FLOPs per phase), datasizes.py (manifests, published sizes) and
  throughput.py (measured or estimated device rates): GPU-hours and wall-clock before submitting.

Jobs reach the harness only through its command line: scripts call the `decodiff` console script.
"""
