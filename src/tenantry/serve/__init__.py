"""Front-ends that run processes: `tenantry up` (the control plane and a local agent), the
API server and the job worker it starts, and the demo."""
