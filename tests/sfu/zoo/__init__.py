"""The client zoo: the clients the SFU is tested against.

- A raw WebRTC peer (rawpeer.py, shapes.py, media.py, sdp.py, rtp.py) that offers SDP in the
  shapes real clients send (Chrome, Firefox, Safari, unusual and broken ones) and speaks raw
  RTP/RTCP over real ICE (aioice) and DTLS-SRTP. It imports nothing from `sfu`, so it cannot
  share the SFU's bugs.
- Headless Debian Chromium with its default and unusual settings (chromium.py, zoo.html).
- aiortc peers (loadtest.bot) misbehaving on purpose (test_hostile.py).
"""
