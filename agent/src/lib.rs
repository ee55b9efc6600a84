//! Tether's robot side and operator side of WebRTC: the robot agent with its safety core
//! (safe-stop on revoke, control loss and lease expiry), and the headless console.

pub mod actuator;
pub mod console;
pub mod events;
pub mod gateway;
pub mod guard;
pub mod link;
pub mod peer;
pub mod robot;
pub mod safety;
pub mod video;
