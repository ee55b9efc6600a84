//! WebRTC plumbing shared by the robot (answerer) and the headless console (offerer):
//! the media engine with VP8, host candidates on one chosen address, mDNS off.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, Registry, SettingEngineBuilder,
};

use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};

/// The payload type VP8 is offered under.
pub const VP8_PAYLOAD_TYPE: u8 = 96;

/// VP8 at the RTP video clock.
pub fn vp8() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

/// Builds a PeerConnection whose only host candidate is on `ip` (loopback by default:
/// a wildcard bind skips loopback), without ICE servers and without mDNS (which fails in a
/// network namespace without multicast).
pub async fn build(
    ip: IpAddr,
    handler: Arc<dyn PeerConnectionEventHandler>,
) -> webrtc::error::Result<Arc<dyn PeerConnection>> {
    let mut media = MediaEngine::default();
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: vp8(),
            payload_type: VP8_PAYLOAD_TYPE,
        },
        RtpCodecKind::Video,
    )?;
    // After the codecs: the interceptors add NACK and TWCC feedback to the codecs present.
    let interceptors = register_default_interceptors(Registry::new(), &mut media)?;
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(interceptors)
        .with_setting_engine(settings)
        .with_handler(handler)
        .with_udp_addrs(vec![SocketAddr::new(ip, 0)])
        .build()
        .await?;
    Ok(Arc::new(pc))
}

/// Reads `events` until one satisfies `done` (true), or until `timeout` or the end (false).
/// Used to wait for ICE gathering: both sides send complete descriptions, candidates inside.
pub async fn wait_for<E>(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<E>,
    timeout: std::time::Duration,
    done: impl Fn(&E) -> bool,
) -> bool {
    let found = tokio::time::timeout(timeout, async {
        while let Some(e) = events.recv().await {
            if done(&e) {
                return true;
            }
        }
        false
    })
    .await;
    matches!(found, Ok(true))
}
