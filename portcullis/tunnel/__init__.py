"""The agent tunnel: many HTTP exchanges multiplexed over one outbound WebSocket (mux.py), the gateway's side
(hub.py) and the agent (agent.py)."""
