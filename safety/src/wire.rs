//! A fixed little-endian binary form of the safety layer's inputs, commands and state, for
//! flight recordings that replay bit for bit (`reflex replay`). Floats travel as their bits,
//! NaN payloads included. Encoding happens off the RT thread (the loop only copies values).

use crate::{
    Command, CommandSource, EstopReport, EstopSource, JointTarget, MAX_JOINTS, Monotonic, Twist,
};

/// A triggered protective zone: which way it blocks and since when it has looked clear. Part of
/// the layer's state, so it lives with [`SafetyState`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Hold {
    /// Blocked direction: unit translation (x, y), or (sign of wz, 0) for rotation.
    pub(crate) direction: [f64; 2],
    pub(crate) clear_since: Option<Monotonic>,
}

/// Appends little-endian values.
#[derive(Debug, Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f32(&mut self, v: f32) {
        self.u32(v.to_bits());
    }
    pub fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }
    pub fn opt_f64(&mut self, v: Option<f64>) {
        self.u8(u8::from(v.is_some()));
        self.f64(v.unwrap_or(0.0));
    }
    pub fn opt_mono(&mut self, v: Option<Monotonic>) {
        self.u8(u8::from(v.is_some()));
        self.u64(v.map_or(0, Monotonic::as_nanos));
    }
    pub fn twist(&mut self, t: &Twist) {
        self.f64(t.vx_mps);
        self.f64(t.vy_mps);
        self.f64(t.wz_radps);
    }
    pub fn estop(&mut self, r: &EstopReport) {
        match r {
            EstopReport::Unknown => {
                self.u8(0);
                self.u64(0);
            }
            EstopReport::Clear(t) => {
                self.u8(1);
                self.u64(t.as_nanos());
            }
            EstopReport::Pressed(t) => {
                self.u8(2);
                self.u64(t.as_nanos());
            }
        }
    }
    pub fn command(&mut self, c: &Command) {
        self.u8(match c.source {
            CommandSource::LocalPolicy => 0,
            CommandSource::Cloud => 1,
            CommandSource::Operator => 2,
            CommandSource::None => 3,
        });
        self.u64(c.stamp.as_nanos());
        self.twist(&c.base);
        for j in &c.joints {
            self.opt_f64(j.position);
            self.opt_f64(j.velocity);
        }
        self.opt_f64(c.gripper_position);
        self.u8(u8::from(c.ee_target_m.is_some()));
        for v in c.ee_target_m.unwrap_or_default() {
            self.f64(v);
        }
    }
}

/// Reads what [`Writer`] wrote; `None` when the bytes run out or hold an invalid tag.
#[derive(Debug)]
pub struct Reader<'a>(pub &'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_le_bytes)
    }
    pub fn f32(&mut self) -> Option<f32> {
        self.u32().map(f32::from_bits)
    }
    pub fn f64(&mut self) -> Option<f64> {
        self.u64().map(f64::from_bits)
    }
    pub fn opt_f64(&mut self) -> Option<Option<f64>> {
        let some = self.u8()?;
        let v = self.f64()?;
        Some((some == 1).then_some(v))
    }
    pub fn opt_mono(&mut self) -> Option<Option<Monotonic>> {
        let some = self.u8()?;
        let v = self.u64()?;
        Some((some == 1).then_some(Monotonic::from_nanos(v)))
    }
    pub fn twist(&mut self) -> Option<Twist> {
        Some(Twist {
            vx_mps: self.f64()?,
            vy_mps: self.f64()?,
            wz_radps: self.f64()?,
        })
    }
    pub fn estop(&mut self) -> Option<EstopReport> {
        let tag = self.u8()?;
        let t = Monotonic::from_nanos(self.u64()?);
        match tag {
            0 => Some(EstopReport::Unknown),
            1 => Some(EstopReport::Clear(t)),
            2 => Some(EstopReport::Pressed(t)),
            _ => None,
        }
    }
    pub fn command(&mut self) -> Option<Command> {
        let source = match self.u8()? {
            0 => CommandSource::LocalPolicy,
            1 => CommandSource::Cloud,
            2 => CommandSource::Operator,
            3 => CommandSource::None,
            _ => return None,
        };
        let stamp = Monotonic::from_nanos(self.u64()?);
        let base = self.twist()?;
        let mut joints = [JointTarget::default(); MAX_JOINTS];
        for j in &mut joints {
            j.position = self.opt_f64()?;
            j.velocity = self.opt_f64()?;
        }
        let gripper_position = self.opt_f64()?;
        let has_ee = self.u8()? == 1;
        let ee = [self.f64()?, self.f64()?, self.f64()?];
        Some(Command {
            source,
            stamp,
            base,
            joints,
            gripper_position,
            ee_target_m: has_ee.then_some(ee),
        })
    }
}

/// Everything in [`crate::Safety`] that changes from tick to tick (latch, reset sequence, last
/// clock, last output, zone holds, and per joint SAF-015's yield to a push and SAF-018's stall
/// window). Copy; taken and restored without allocation, so a recording can start a replay
/// from any tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SafetyState {
    pub(crate) latched: bool,
    pub(crate) last_reset_seq: u64,
    pub(crate) last_now: Option<Monotonic>,
    pub(crate) previous: Command,
    pub(crate) translation_hold: Option<Hold>,
    pub(crate) rotation_hold: Option<Hold>,
    pub(crate) yielding: [bool; MAX_JOINTS],
    pub(crate) stall: [crate::types::StallWindow; MAX_JOINTS],
}

fn put_hold(w: &mut Writer, h: &Option<Hold>) {
    w.u8(u8::from(h.is_some()));
    let h = h.unwrap_or(Hold {
        direction: [0.0; 2],
        clear_since: None,
    });
    w.f64(h.direction[0]);
    w.f64(h.direction[1]);
    w.opt_mono(h.clear_since);
}

fn get_hold(r: &mut Reader<'_>) -> Option<Option<Hold>> {
    let some = r.u8()? == 1;
    let direction = [r.f64()?, r.f64()?];
    let clear_since = r.opt_mono()?;
    Some(some.then_some(Hold {
        direction,
        clear_since,
    }))
}

impl SafetyState {
    pub fn encode(&self, w: &mut Writer) {
        w.u8(u8::from(self.latched));
        w.u64(self.last_reset_seq);
        w.opt_mono(self.last_now);
        w.command(&self.previous);
        put_hold(w, &self.translation_hold);
        put_hold(w, &self.rotation_hold);
    }

    pub fn decode(r: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            latched: r.u8()? == 1,
            last_reset_seq: r.u64()?,
            last_now: r.opt_mono()?,
            previous: r.command()?,
            translation_hold: get_hold(r)?,
            rotation_hold: get_hold(r)?,
            yielding: [false; MAX_JOINTS],
            stall: [crate::types::StallWindow::default(); MAX_JOINTS],
        })
    }

    /// The per-joint arm state (SAF-015 yield, SAF-018 stall window), written after the rest
    /// of a record so that files from before it still read (without it: all clear).
    /// [`Self::ARM_BYTES`] bytes.
    pub fn encode_arm(&self, w: &mut Writer) {
        for (yielding, s) in self.yielding.iter().zip(&self.stall) {
            w.u8(u8::from(*yielding));
            w.u8(s.sign as u8);
            w.f64(s.anchor);
            w.f64(s.since_s);
            w.u8(u8::from(s.opened));
            w.f64(s.last_target);
        }
    }

    /// The size of [`Self::encode_arm`]'s output.
    pub const ARM_BYTES: usize = MAX_JOINTS * (1 + 1 + 8 + 8 + 1 + 8);

    /// Reads what [`Self::encode_arm`] wrote; None (and `self` unchanged) when it is absent.
    pub fn decode_arm(&mut self, r: &mut Reader<'_>) -> Option<()> {
        let mut yielding = [false; MAX_JOINTS];
        let mut stall = [crate::types::StallWindow::default(); MAX_JOINTS];
        for (y, s) in yielding.iter_mut().zip(&mut stall) {
            *y = r.u8()? == 1;
            s.sign = r.u8()? as i8;
            s.anchor = r.f64()?;
            s.since_s = r.f64()?;
            s.opened = r.u8()? == 1;
            s.last_target = r.f64()?;
        }
        (self.yielding, self.stall) = (yielding, stall);
        Some(())
    }
}

/// E-stop reports of every source, in [`EstopSource`] index order.
pub fn put_estops(w: &mut Writer, e: &[EstopReport; EstopSource::COUNT]) {
    for r in e {
        w.estop(r);
    }
}

pub fn get_estops(r: &mut Reader<'_>) -> Option<[EstopReport; EstopSource::COUNT]> {
    let mut e = [EstopReport::Unknown; EstopSource::COUNT];
    for slot in &mut e {
        *slot = r.estop()?;
    }
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_and_state_round_trip_bit_for_bit() {
        let mut c = Command::base(
            CommandSource::Cloud,
            Monotonic::from_nanos(42),
            f64::NAN,
            -0.0,
            f64::INFINITY,
        );
        c.joints[3].position = Some(1.5);
        c.ee_target_m = Some([0.1, 0.2, 0.3]);
        let s = SafetyState {
            latched: true,
            last_reset_seq: 7,
            last_now: Some(Monotonic::from_nanos(99)),
            previous: c,
            translation_hold: Some(Hold {
                direction: [1.0, 0.0],
                clear_since: Some(Monotonic::from_nanos(5)),
            }),
            rotation_hold: None,
            yielding: [false; MAX_JOINTS],
            stall: [crate::types::StallWindow::default(); MAX_JOINTS],
        };
        let mut s = s;
        s.yielding[2] = true;
        s.stall[1] = crate::types::StallWindow {
            sign: -1,
            anchor: 0.25,
            since_s: 0.125,
            opened: true,
            last_target: 0.5,
        };
        let mut w = Writer::default();
        s.encode(&mut w);
        s.encode_arm(&mut w);
        let mut r = Reader(&w.0);
        let mut back = SafetyState::decode(&mut r).unwrap();
        back.decode_arm(&mut r).unwrap();
        assert_eq!((back.yielding, back.stall), (s.yielding, s.stall));
        let mut w2 = Writer::default();
        back.encode(&mut w2);
        back.encode_arm(&mut w2);
        assert_eq!(w.0, w2.0);
        // A record from before the arm state: it reads, all clear.
        let mut w3 = Writer::default();
        s.encode(&mut w3);
        let mut r = Reader(&w3.0);
        let mut old = SafetyState::decode(&mut r).unwrap();
        assert!(old.decode_arm(&mut r).is_none());
        assert_eq!(old.stall[1], crate::types::StallWindow::default());
        assert_eq!(w.0.len() - w3.0.len(), SafetyState::ARM_BYTES);
        assert!(back.previous.base.vx_mps.is_nan());
        assert!(SafetyState::decode(&mut Reader(&w.0[..10])).is_none());
    }
}
