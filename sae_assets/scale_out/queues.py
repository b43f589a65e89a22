"""The Celery queues steps are sent to, and the op tag that picks one (plain names: no Celery needed to read them)."""

GPU_QUEUE = "gpu"  # the gpu pool's steps: python -m sae_assets.worker --queue gpu
CPU_QUEUE = "cpu"  # every other step: python -m sae_assets.worker --queue cpu
QUEUES = (CPU_QUEUE, GPU_QUEUE)
QUEUE_TAG = "dagster-celery/queue"  # dagster-celery reads this op tag when it sends a step
