"""The client zoo: a raw WebRTC peer that offers SDP in the shapes real clients send and speaks
raw RTP/RTCP over real ICE (aioice) and DTLS-SRTP, to test the SFU against Chrome, Firefox,
Safari, unusual settings and broken or hostile peers. Nothing here imports `sfu`."""
