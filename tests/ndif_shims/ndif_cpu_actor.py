"""NDIF's model actor on a machine without a GPU: imported by the local NDIF server's Ray workers, never by tests.

``tests/ndif_server.py`` puts this folder (and nothing else of the project) on the server's PYTHONPATH and names
``ndif_cpu_actor.CPUModelActor`` as the deployment's actor class. NDIF 0.1.2's own actor synchronises CUDA after
loading the weights and after each request; this one loads them on the CPU and cleans up without CUDA. Everything
between (deserialising the request, running the traced block, returning the saves) is NDIF's own code.
"""

import gc

import ray
from ndif.services.ray.deployments.modeling.base import BaseModelDeployment
from nnsight.modeling.huggingface import HuggingFaceModel


@ray.remote(num_cpus=1, max_restarts=-1)
class CPUModelActor(BaseModelDeployment):
    """A model replica whose weights stay in this process's memory, on the CPU."""

    # Parking a replica (HOT -> WARM) moves weights between GPU and CPU memory: nothing to move here.
    CACHEABLE = False

    def load_from_disk(self) -> HuggingFaceModel:
        # The controller hands out the fake GPU the Ray node advertises; no CUDA call may see it.
        self.gpu_mem_bytes_by_id = {}
        model = HuggingFaceModel.from_model_key(self.model_key, dispatch=True, dtype=self.dtype_name, **self.kwargs)
        model._module.requires_grad_(False)
        return model

    def cleanup(self) -> None:
        self.kill_switch.clear()
        self.kill_reason = None
        self.execution_ident = None
        self.model.interleaver.cancel()
        gc.collect()
