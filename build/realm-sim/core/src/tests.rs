//! Whole-Realm tests: the dispatch, RIPAS, stage 2 (walked as the MMU would) and memory effects
//! together, driven through `moat-rsi`'s own client.

use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

use moat_rsi::abi::{ARG_REGS, RESULT_REGS, SMCCC_NOT_SUPPORTED};
use moat_rsi::measurement::digest;
use moat_rsi::{
    ChangeDestroyed, Conduit, Error, Granule, HashAlgorithm, MeasurementIndex, Ripas, Rsi, Version,
};

use crate::layout::{Layout, RAM_BASE};
use crate::realm::{Machine, Outcome, Realm, psci};
use crate::stage2::{self, Decision, TableAddresses, decide, descriptor, walk};

const MIB: u64 = 1 << 20;
const G: u64 = 4096;
/// Realm RAM for these tests: 8 MiB (4 level-3 tables per half).
const N: u64 = 8 * MIB;

/// Records what realm-sim did to memory and the TLBs.
#[derive(Default)]
struct FakeMachine {
    zeroed: Vec<u64>,
    writes: BTreeMap<u64, u8>,
    invalidations: usize,
    publications: usize,
}

impl Machine for FakeMachine {
    fn zero_granule(&mut self, pa: u64) {
        self.zeroed.push(pa);
    }

    fn write_bytes(&mut self, pa: u64, bytes: &[u8]) {
        for (offset, byte) in bytes.iter().enumerate() {
            self.writes.insert(pa + offset as u64, *byte);
        }
    }

    fn invalidate_stage2(&mut self) {
        self.invalidations += 1;
    }

    fn publish_stage2(&mut self) {
        self.publications += 1;
    }
}

/// Fake table addresses (realm-sim's real ones are identity-mapped PAs).
const ADDRESSES: TableAddresses = TableAddresses {
    l1: 0x8010_0000,
    l2_protected: 0x8010_1000,
    l2_alias: 0x8010_2000,
    l3_protected: 0x8020_0000,
    l3_alias: 0x8030_0000,
};

struct Sim {
    realm: Realm<Vec<u8>, Vec<u64>>,
    machine: FakeMachine,
    l1: Vec<u64>,
    l2_protected: Vec<u64>,
    l2_alias: Vec<u64>,
    calls: usize,
}

impl Sim {
    fn new(stress_host: bool) -> Sim {
        let layout = Layout::new(RAM_BASE, 1088 * MIB, Some(N)).unwrap();
        let entries = stage2::l3_entries(&layout);
        let mut l1 = vec![0; stage2::ENTRIES];
        let l2_count = stage2::l2_tables(&layout);
        assert_eq!(l2_count, 1);
        let mut l2_protected = vec![0; l2_count * stage2::ENTRIES];
        let mut l2_alias = vec![0; l2_count * stage2::ENTRIES];
        stage2::build_upper_levels(
            &layout,
            &ADDRESSES,
            &mut l1,
            &mut l2_protected,
            &mut l2_alias,
        )
        .unwrap();
        let rim = digest(HashAlgorithm::Sha256, &[b"image", b"dtb"]);
        let mut realm = Realm::new(
            layout,
            vec![0xff; layout.granules() as usize],
            vec![0xdead; entries],
            vec![0xdead; entries],
            &rim,
            stress_host,
        )
        .unwrap();
        realm.map_all();
        // The DTB (one granule) and a 1 MiB image, as realm-sim loads them.
        realm.set_initial_ram(RAM_BASE, RAM_BASE + G);
        realm.set_initial_ram(RAM_BASE + 2 * MIB, RAM_BASE + 3 * MIB);
        Sim {
            realm,
            machine: FakeMachine::default(),
            l1,
            l2_protected,
            l2_alias,
            calls: 0,
        }
    }

    fn read_descriptor(&self, pa: u64) -> Option<u64> {
        let table = |base: u64, entries: &[u64]| {
            let index = usize::try_from(pa.checked_sub(base)? / 8).ok()?;
            entries.get(index).copied()
        };
        if (ADDRESSES.l1..ADDRESSES.l1 + 4096).contains(&pa) {
            return table(ADDRESSES.l1, &self.l1);
        }
        if (ADDRESSES.l2_protected..ADDRESSES.l2_protected + 4096).contains(&pa) {
            return table(ADDRESSES.l2_protected, &self.l2_protected);
        }
        if (ADDRESSES.l2_alias..ADDRESSES.l2_alias + 4096).contains(&pa) {
            return table(ADDRESSES.l2_alias, &self.l2_alias);
        }
        let layout = self.realm.layout();
        for (base, alias) in [(ADDRESSES.l3_protected, false), (ADDRESSES.l3_alias, true)] {
            let span = stage2::l3_entries(layout) as u64 * 8;
            if (base..base + span).contains(&pa) {
                let ipa = layout.ram_base() + (pa - base) / 8 * G;
                let tables = self.realm.tables();
                return if alias {
                    tables.alias_entry(ipa)
                } else {
                    tables.protected_entry(ipa)
                };
            }
        }
        None
    }

    /// Where the MMU would send `ipa`, as a [`Decision`].
    fn translate(&self, ipa: u64) -> Decision {
        match walk(ADDRESSES.l1, ipa, |pa| self.read_descriptor(pa)) {
            None => Decision::Refused,
            Some((pa, leaf)) => match leaf & descriptor::MEM_ATTR {
                descriptor::DEVICE_NGNRE => Decision::Device(pa),
                descriptor::NORMAL_WRITE_BACK if leaf & descriptor::EXECUTE_NEVER != 0 => {
                    Decision::Host(pa)
                }
                descriptor::NORMAL_WRITE_BACK => Decision::Private(pa),
                other => panic!("unexpected memory attributes {other:#x}"),
            },
        }
    }

    /// The walk agrees with the rule for a spread of IPAs in every region.
    fn check_against_rule(&self) {
        let layout = *self.realm.layout();
        let s = layout.shared_bit();
        let mut ipas = vec![0, 0x0800_0000, 0x0900_0000, 0x0a00_3e00, 0x3fff_f000];
        let mut ipa = layout.ram_base();
        while ipa < layout.ram_top() + 4 * G {
            ipas.push(ipa + 0x18);
            ipa += G;
        }
        ipas.extend([
            layout.private_base(),
            layout.private_top(),
            0x8000_0000,
            s - G,
        ]);
        for ipa in ipas {
            for candidate in [ipa, ipa | s] {
                assert_eq!(
                    self.translate(candidate),
                    decide(&layout, candidate, |granule| self.realm.ripas(granule)),
                    "IPA {candidate:#x}"
                );
            }
        }
    }
}

impl Conduit for Sim {
    fn call(&mut self, function_id: u32, args: [u64; ARG_REGS]) -> [u64; RESULT_REGS] {
        self.calls += 1;
        let mut x = [0u64; ARG_REGS + 1];
        x[0] = u64::from(function_id);
        x[1..].copy_from_slice(&args);
        match self.realm.handle_smc(0, &x, &mut self.machine) {
            Outcome::Return(reply) => {
                // Registers the call does not define keep the caller's values.
                let mut result = [0u64; RESULT_REGS];
                result.copy_from_slice(&x[..RESULT_REGS]);
                result[..reply.count].copy_from_slice(&reply.registers[..reply.count]);
                result
            }
            Outcome::Forward => panic!("forwarded {function_id:#x}"),
        }
    }

    fn call_with_granule(
        &mut self,
        function_id: u32,
        args: [u64; ARG_REGS],
        granule: &mut Granule,
    ) -> [u64; RESULT_REGS] {
        let result = self.call(function_id, args);
        let pa = self.realm.layout().private_pa(args[0]).unwrap_or(0);
        for (offset, byte) in granule.0.iter_mut().enumerate() {
            if let Some(written) = self.machine.writes.get(&(pa + offset as u64)) {
                *byte = *written;
            }
        }
        result
    }
}

#[test]
fn initial_stage2_follows_the_rules() {
    let sim = Sim::new(false);
    let layout = *sim.realm.layout();
    let s = layout.shared_bit();
    // DTB and image: private. The rest of RAM: host memory at the alias only.
    assert_eq!(
        sim.translate(RAM_BASE + 8),
        Decision::Private(RAM_BASE + N + 8)
    );
    assert_eq!(
        sim.translate(RAM_BASE + 2 * MIB + 0x40),
        Decision::Private(RAM_BASE + N + 2 * MIB + 0x40)
    );
    assert_eq!(sim.translate(RAM_BASE + G), Decision::Refused);
    assert_eq!(
        sim.translate(s | (RAM_BASE + G)),
        Decision::Host(RAM_BASE + G)
    );
    assert_eq!(sim.translate(s | RAM_BASE), Decision::Refused);
    // The UART at its canonical address faults; at its alias it is a device.
    assert_eq!(sim.translate(0x0900_0000), Decision::Refused);
    assert_eq!(
        sim.translate(s | 0x0900_0000),
        Decision::Device(0x0900_0000)
    );
    sim.check_against_rule();
}

#[test]
fn the_rsi_client_boots_against_realm_sim() {
    let mut rsi = Rsi::new(Sim::new(false));
    let negotiated = rsi.negotiate().unwrap();
    assert_eq!(negotiated.version, Version::V1_0);
    assert_eq!(rsi.features(0).unwrap(), 0);
    let mut granule = Granule::zeroed();
    let config = rsi.realm_config(&mut granule, RAM_BASE + 2 * MIB).unwrap();
    assert_eq!(config.ipa_width(), 39);
    assert_eq!(config.shared_bit(), 1 << 38);
    assert_eq!(config.hash_algorithm(), HashAlgorithm::Sha256);
    // REALM_CONFIG into EMPTY or unaligned memory is refused.
    assert!(rsi.realm_config(&mut granule, RAM_BASE + 4 * MIB).is_err());
    assert!(rsi.realm_config(&mut granule, RAM_BASE + 8).is_err());

    // RIPAS RAM over all memory, as the kernel does at boot.
    let report = rsi
        .ipa_state_set(
            RAM_BASE,
            RAM_BASE + N,
            Ripas::Ram,
            ChangeDestroyed::NoChangeDestroyed,
        )
        .unwrap();
    assert_eq!(report.calls, 1);
    let sim = rsi.conduit();
    // Zeroed: exactly the granules that were EMPTY (the DTB and image keep their contents).
    let initially_ram = 1 + 256;
    assert_eq!(sim.machine.zeroed.len() as u64, N / G - initially_ram);
    assert!(!sim.machine.zeroed.contains(&(RAM_BASE + N)));
    assert!(sim.machine.zeroed.contains(&(RAM_BASE + N + G)));
    assert!(!sim.machine.zeroed.contains(&(RAM_BASE + N + 2 * MIB)));
    assert_eq!(sim.machine.invalidations, 1);
    sim.check_against_rule();

    // RAM → RAM is a no-op: nothing zeroed, no TLB maintenance.
    let before = rsi.conduit().machine.zeroed.len();
    rsi.ipa_state_set(
        RAM_BASE,
        RAM_BASE + N,
        Ripas::Ram,
        ChangeDestroyed::NoChangeDestroyed,
    )
    .unwrap();
    assert_eq!(rsi.conduit().machine.zeroed.len(), before);
    assert_eq!(rsi.conduit().machine.invalidations, 1);

    // Share 64 KiB: protected refused, alias is host memory, private memory scrubbed.
    let shared = RAM_BASE + 5 * MIB;
    rsi.ipa_state_set(
        shared,
        shared + 16 * G,
        Ripas::Empty,
        ChangeDestroyed::ChangeDestroyed,
    )
    .unwrap();
    let sim = rsi.conduit();
    assert_eq!(sim.machine.zeroed.len(), before + 16);
    assert_eq!(sim.translate(shared), Decision::Refused);
    let s = 1u64 << 38;
    assert_eq!(
        sim.translate(s | (shared + 0x10)),
        Decision::Host(shared + 0x10)
    );
    assert_eq!(sim.translate(s | (shared + 16 * G)), Decision::Refused);
    sim.check_against_rule();
    let state = rsi.ipa_state_get(RAM_BASE, RAM_BASE + N).unwrap();
    assert_eq!((state.ripas, state.top), (Ripas::Ram, shared));
    let state = rsi.ipa_state_get(shared, RAM_BASE + N).unwrap();
    assert_eq!((state.ripas, state.top), (Ripas::Empty, shared + 16 * G));

    // And back to private.
    rsi.ipa_state_set(
        shared,
        shared + 16 * G,
        Ripas::Ram,
        ChangeDestroyed::NoChangeDestroyed,
    )
    .unwrap();
    assert_eq!(
        rsi.conduit().translate(shared),
        Decision::Private(shared + N)
    );
    rsi.conduit().check_against_rule();
}

#[test]
fn ranges_that_start_below_ram_still_remap_the_ram_part() {
    let mut rsi = Rsi::new(Sim::new(false));
    rsi.ipa_state_set(
        RAM_BASE,
        RAM_BASE + N,
        Ripas::Ram,
        ChangeDestroyed::NoChangeDestroyed,
    )
    .unwrap();
    // EMPTY from below the Realm's RAM into it: the RAM part is shared and mapped at the alias.
    rsi.ipa_state_set(
        RAM_BASE - 16 * G,
        RAM_BASE + 4 * G,
        Ripas::Empty,
        ChangeDestroyed::ChangeDestroyed,
    )
    .unwrap();
    let sim = rsi.conduit();
    let s = 1u64 << 38;
    assert_eq!(
        sim.translate(s | (RAM_BASE + 3 * G)),
        Decision::Host(RAM_BASE + 3 * G)
    );
    assert_eq!(sim.translate(RAM_BASE + 3 * G), Decision::Refused);
    assert_eq!(
        sim.translate(RAM_BASE + 4 * G),
        Decision::Private(RAM_BASE + N + 4 * G)
    );
    sim.check_against_rule();
}

#[test]
fn huge_requests_make_bounded_progress_per_call() {
    let mut sim = Sim::new(false);
    let set = moat_rsi::Function::IpaStateSet.id();
    let mut args = [0u64; ARG_REGS];
    args[..4].copy_from_slice(&[0, 1 << 38, 0, 1]);
    let result = sim.call(set, args);
    assert_eq!(result[0], 0);
    assert_eq!(result[1], crate::realm::MAX_GRANULES_PER_CALL * G);
    assert_eq!(result[2], 0);
}

#[test]
fn stress_mode_makes_one_granule_of_progress_per_call() {
    let mut rsi = Rsi::new(Sim::new(true));
    let base = RAM_BASE + 4 * MIB;
    let report = rsi
        .ipa_state_set(
            base,
            base + 8 * G,
            Ripas::Ram,
            ChangeDestroyed::NoChangeDestroyed,
        )
        .unwrap();
    assert_eq!(report.calls, 8);
    assert_eq!(rsi.conduit().machine.zeroed.len(), 8);
    assert_eq!(rsi.conduit().machine.invalidations, 8);
    rsi.conduit().check_against_rule();
    // Already RAM: still one granule per call, nothing zeroed.
    let report = rsi
        .ipa_state_set(
            base,
            base + 8 * G,
            Ripas::Ram,
            ChangeDestroyed::NoChangeDestroyed,
        )
        .unwrap();
    assert_eq!(report.calls, 8);
    assert_eq!(rsi.conduit().machine.zeroed.len(), 8);
}

#[test]
fn ram_outside_the_realm_stops_and_the_client_reports_zero_progress() {
    let mut rsi = Rsi::new(Sim::new(false));
    let top = RAM_BASE + N;
    // RAM past the end of the Realm's memory: progress up to the end, then none.
    let error = rsi
        .ipa_state_set(
            top - G,
            top + G,
            Ripas::Ram,
            ChangeDestroyed::NoChangeDestroyed,
        )
        .unwrap_err();
    assert_eq!(error, Error::ZeroProgress { at: top });
    // EMPTY passes over unbacked protected IPAs.
    rsi.ipa_state_set(
        top - G,
        top + 4 * G,
        Ripas::Empty,
        ChangeDestroyed::NoChangeDestroyed,
    )
    .unwrap();
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let mut sim = Sim::new(false);
    let s = 1u64 << 38;
    let set = moat_rsi::Function::IpaStateSet.id();
    for args in [
        [RAM_BASE + 1, RAM_BASE + G, 1, 0],
        [RAM_BASE, RAM_BASE, 1, 0],
        [RAM_BASE + G, RAM_BASE, 1, 0],
        [RAM_BASE, RAM_BASE + G, 2, 0],
        [RAM_BASE, RAM_BASE + G, u64::MAX, 0],
        [s, s + G, 0, 0],
        [RAM_BASE, !(G - 1), 1, 0],
    ] {
        let mut full = [0u64; ARG_REGS];
        full[..4].copy_from_slice(&args);
        assert_eq!(sim.call(set, full)[0], 1, "{args:x?}");
    }
    let get = moat_rsi::Function::IpaStateGet.id();
    assert_eq!(
        sim.call(get, [RAM_BASE, RAM_BASE, 0, 0, 0, 0, 0, 0, 0, 0])[0],
        1
    );
    let extend = moat_rsi::Function::MeasurementExtend.id();
    assert_eq!(sim.call(extend, [0, 8, 0, 0, 0, 0, 0, 0, 0, 0])[0], 1);
    assert_eq!(sim.call(extend, [1, 65, 0, 0, 0, 0, 0, 0, 0, 0])[0], 1);
    let read = moat_rsi::Function::MeasurementRead.id();
    assert_eq!(sim.call(read, [5, 0, 0, 0, 0, 0, 0, 0, 0, 0])[0], 1);
    // Unknown functions and unimplemented RSI commands: SMCCC NOT_SUPPORTED.
    for id in [
        0xC400_0194,
        0xC400_0199,
        0xC400_019A,
        0x8400_0003,
        0xC400_0003,
        0,
    ] {
        assert_eq!(
            sim.call(id, [0; ARG_REGS])[0],
            SMCCC_NOT_SUPPORTED,
            "{id:#x}"
        );
    }
    // Nothing changed.
    assert!(sim.machine.zeroed.is_empty());
    sim.check_against_rule();
}

#[test]
fn measurements_and_versions() {
    let mut rsi = Rsi::new(Sim::new(false));
    let rim = rsi.measurement_read(MeasurementIndex::Rim).unwrap();
    let expected = digest(HashAlgorithm::Sha256, &[b"image", b"dtb"]);
    assert_eq!(rim.0, expected);
    rsi.measurement_extend(MeasurementIndex::Rem0, b"manifest")
        .unwrap();
    let rem = rsi.measurement_read(MeasurementIndex::Rem0).unwrap();
    assert_eq!(
        rem.0,
        moat_rsi::measurement::extend(HashAlgorithm::Sha256, &[0; 64], b"manifest")
    );
    assert!(matches!(
        rsi.version(Version::new(2, 0)),
        Err(Error::VersionMismatch { .. })
    ));
    assert!(matches!(
        rsi.version(Version::new(1, 1)),
        Err(Error::VersionMismatch { .. })
    ));
}

#[test]
fn psci_and_smccc() {
    let mut sim = Sim::new(false);
    let mut machine = FakeMachine::default();
    let mut call = |id: u32, x1: u64| {
        let mut x = [0u64; ARG_REGS + 1];
        x[0] = u64::from(id);
        x[1] = x1;
        sim.realm.handle_smc(0, &x, &mut machine)
    };
    let value = |outcome: Outcome| match outcome {
        Outcome::Return(reply) => {
            assert_eq!(reply.count, 1);
            reply.registers[0]
        }
        Outcome::Forward => panic!("forwarded"),
    };
    assert_eq!(call(psci::SYSTEM_OFF, 0), Outcome::Forward);
    assert_eq!(call(psci::SYSTEM_RESET, 0), Outcome::Forward);
    assert_eq!(value(call(psci::VERSION, 0)), 0x1_0000);
    assert_eq!(value(call(psci::FEATURES, u64::from(psci::SYSTEM_OFF))), 0);
    assert_eq!(
        value(call(psci::FEATURES, 0xC400_0003)),
        SMCCC_NOT_SUPPORTED
    );
    assert_eq!(value(call(psci::SMCCC_VERSION, 0)), 0x1_0001);
    assert_eq!(
        value(call(
            psci::SMCCC_ARCH_FEATURES,
            u64::from(psci::SMCCC_VERSION)
        )),
        0
    );
    assert_eq!(
        value(call(psci::SMCCC_ARCH_FEATURES, 0x8000_8000)),
        SMCCC_NOT_SUPPORTED
    );
    // The upper half of X0 is not part of the function id.
    let mut x = [0u64; ARG_REGS + 1];
    x[0] = 0xffff_ffff_0000_0000 | u64::from(psci::SYSTEM_OFF);
    assert_eq!(sim.realm.handle_smc(0, &x, &mut machine), Outcome::Forward);
    // A non-zero SMC immediate is not SMCCC.
    x[0] = u64::from(psci::VERSION);
    assert_eq!(
        sim.realm.handle_smc(1, &x, &mut machine),
        Outcome::Return(crate::realm::Reply::not_supported())
    );
}
