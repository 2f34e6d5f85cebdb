"""Networks, the EDE-GAN model, the paper's loss terms, FLOP counting and the stacked (vmapped) layers."""
