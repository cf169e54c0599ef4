"""The tables this domain reads: jobs, their steps, and events.

They are core's (`tenantry.core.models`), because every domain writes them (a job through
`tenantry.core.jobs.create_job`, an event through `tenantry.core.events.emit`); here they
are read, joined with the names people know, and scoped to who asks.
"""

from tenantry.core.models import Event, Job, JobStep

__all__ = ["Event", "Job", "JobStep"]
