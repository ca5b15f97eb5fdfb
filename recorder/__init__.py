"""Call recording (encoded passthrough mux), intro-video transcoding, selfies (to come)."""
