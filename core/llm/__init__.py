"""The one litellm client (`client`): cached, retried, concurrent chat completions."""
