"""The streaming domain: the live session job's asset, its supervisor sensor and its start job."""
