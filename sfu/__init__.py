"""The media plane: routers, transports, producers and consumers forwarding RTP (to come).

Never imports api/ or signaling/: the application owns rooms and auth, the SFU owns packets.
"""
