"""Pure data and rules: requests, jobs, limits, errors. Imports no framework."""
