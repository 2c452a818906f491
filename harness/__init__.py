"""Rolling policies out across tasks and seeds: chunk execution, runner, results, videos, gallery."""
