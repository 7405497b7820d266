"""The embedded MuJoCo simulator (Ant) with privileged observations, sensor models and
randomization, shared by sim_node, the recorder chain and in-process evaluation."""
