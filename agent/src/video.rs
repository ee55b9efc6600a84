//! The robot's camera stand-in: a moving test pattern (ffmpeg's `testsrc2`, pre-encoded as
//! VP8 in `assets/test-pattern.ivf` by `assets/make-test-pattern.sh`), looped forever on a
//! WebRTC video track at its own frame rate.

use bytes::Bytes;
use rtc::media::io::ivf_reader::IVFReader;
use rtc::media::Sample;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpSender;

const CLIP: &[u8] = include_bytes!("../assets/test-pattern.ivf");
/// The track's SSRC; one track per PeerConnection, so a constant does.
const SSRC: u32 = 0x7E7E_0001;

/// The clip's frames and the time each lasts.
struct Clip {
    frames: Vec<Bytes>,
    frame_duration: Duration,
}

fn clip() -> &'static Clip {
    static CLIP_FRAMES: OnceLock<Clip> = OnceLock::new();
    CLIP_FRAMES.get_or_init(|| {
        let (mut reader, header) =
            IVFReader::new(std::io::Cursor::new(CLIP)).expect("the embedded clip is valid IVF");
        let mut frames = Vec::new();
        while let Ok((frame, _)) = reader.parse_next_frame() {
            frames.push(frame.freeze());
        }
        let frame_duration = Duration::from_secs_f64(
            f64::from(header.timebase_numerator) / f64::from(header.timebase_denominator.max(1)),
        );
        Clip {
            frames,
            frame_duration,
        }
    })
}

/// A test-pattern video track attached to a PeerConnection.
#[derive(Clone)]
pub struct TestPattern {
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn RtpSender>,
}

impl TestPattern {
    /// Adds a VP8 track to `pc` (before the offer is applied, so the console's receive-only
    /// video section binds to it).
    pub async fn attach(pc: &Arc<dyn PeerConnection>) -> webrtc::error::Result<Self> {
        let track = Arc::new(TrackLocalStaticSample::new(
            Instant::now(),
            MediaStreamTrack::new(
                "robot".to_owned(),
                "robot-camera".to_owned(),
                "robot-camera".to_owned(),
                RtpCodecKind::Video,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(SSRC),
                        ..Default::default()
                    },
                    codec: crate::peer::vp8(),
                    ..Default::default()
                }],
            ),
        )?);
        let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
        Ok(Self { track, sender })
    }

    /// Streams the clip in a loop until the task is aborted. Call once connected.
    pub async fn stream(self) {
        let clip = clip();
        let payload_type = match self.sender.get_parameters().await {
            Ok(p) => p
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case("video/VP8"))
                .map(|c| c.payload_type)
                .unwrap_or(crate::peer::VP8_PAYLOAD_TYPE),
            Err(_) => crate::peer::VP8_PAYLOAD_TYPE,
        };
        let mut tick = tokio::time::interval(clip.frame_duration);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        for frame in clip.frames.iter().cycle() {
            tick.tick().await;
            let sample = Sample {
                data: frame.clone(),
                duration: clip.frame_duration,
                ..Sample::new(Instant::now())
            };
            if let Err(e) = self
                .track
                .write_sample(SSRC, payload_type, &sample, &[])
                .await
            {
                tracing::debug!(error = %e, "a video frame was not sent");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_clip_is_vp8_at_thirty_frames_a_second() {
        let clip = super::clip();
        assert_eq!(clip.frames.len(), 90);
        assert_eq!(clip.frame_duration.as_millis(), 33);
        assert!(super::CLIP[8..12] == *b"VP80");
    }
}
