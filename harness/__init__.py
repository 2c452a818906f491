"""Rolling policies out across tasks and seeds, and reviewing the results.

Modules, one owner per concept:
    config            BenchConfig (``vla bench`` flags)
    benchmark_specs   named benchmark specs (``harness/specs/*.yaml``) and ``--seeds`` parsing
    bench             body of ``vla bench``: resolve, check the policy against each task, run, write results.json
    dispatch          where work items run: in this process, in worker processes (workers) or on Ray actors
                      (ray_executor: one actor per simulator, this process the only writer)
    runner            one process's policy, chunk executor and envs running work items into records
    rollout           one work item (a task, B seeds) rolled out into EpisodeRecords
    chunking          action chunks -> one action per step (open loop, temporal ensembling)
    records           EpisodeRecord, episodes.jsonl (the one reader and the torn-line rule), results blocks
    metrics           Wilson intervals, exact McNemar, timing percentiles
    video             camera tiling, overlay, verified mp4 encoding
    provenance        git SHA, packages, Vulkan device, checkpoint digest, command line
    summary           console summary of a results.json
    review_data       finished run folders for gallery and compare (review_config: their flags)
    gallery / compare ``vla gallery`` pages and ``vla compare`` paired tests
Policies are known only through ``policies.base`` (the protocol and registry).
"""
