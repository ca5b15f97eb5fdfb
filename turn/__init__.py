"""TURN REST credentials, ICE servers per region and coturn config rendering (to come)."""
