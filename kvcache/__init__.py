"""chainfs.kvcache."""
