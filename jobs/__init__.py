"""routeq's job contract and producer side. Imports nothing from ``worker``."""

from jobs.contract import Constraints, Document, Job, OutputFormat, Tags, TaskType
from jobs.tiers import Tier

__all__ = ["Constraints", "Document", "Job", "OutputFormat", "Tags", "TaskType", "Tier"]
