"""One module per architecture: the network, its weight loader, its builder (`register_architecture`) and the
registry entries of its published models (`register_models`). `engines.registry` imports every module here, so a
new file is found without being listed anywhere else."""
