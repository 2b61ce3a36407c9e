//! The floor of a BTF tracepoint program: an empty one (`return 0`) on each event
//! crashtrace attaches to. crashtrace's programs are `tp_btf`, bpftrace 0.17's are perf
//! tracepoints, whose kernel path and statistics differ; what crashtrace's test of a
//! rejected event adds is its cost minus this one's, on the same workload.
//!
//! The object is written here (two instructions, a license): building an eBPF crate for
//! it would need the eBPF toolchain in the bench.

use anyhow::{Context as _, Result};
use aya::{Btf, Ebpf, programs::BtfTracePoint};
use object::write::{Object, Symbol, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
};

/// `r0 = 0; exit`.
const RETURN_ZERO: [u8; 16] = [
    0xb7, 0, 0, 0, 0, 0, 0, 0, // mov64 r0, 0
    0x95, 0, 0, 0, 0, 0, 0, 0, // exit
];

/// Empty programs attached to `events` (kernel tracepoint names) until dropped.
pub struct Floor {
    ebpf: Ebpf,
    names: Vec<String>,
}

impl Floor {
    pub fn attach(events: &[&str]) -> Result<Self> {
        let mut ebpf = Ebpf::load(&object(events)?).context("loading the empty programs")?;
        let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
        let mut names = vec![];
        for (i, event) in events.iter().enumerate() {
            let name = format!("floor{i}");
            let p: &mut BtfTracePoint = ebpf
                .program_mut(&name)
                .context("the empty program")?
                .try_into()?;
            p.load(event, &btf)
                .with_context(|| format!("loading an empty tp_btf program on {event}"))?;
            p.attach()?;
            names.push(name);
        }
        Ok(Self { ebpf, names })
    }

    /// Runs and total run time (ns) of each event's program, in the order attached.
    pub fn counters(&self) -> Result<Vec<(u64, u64)>> {
        self.names
            .iter()
            .map(|name| {
                let p: &BtfTracePoint = self
                    .ebpf
                    .program(name)
                    .context("the empty program")?
                    .try_into()?;
                let info = p.info()?;
                Ok((info.run_count(), info.run_time().as_nanos() as u64))
            })
            .collect()
    }
}

/// An ELF object with one `tp_btf/<event>` section per event, each holding RETURN_ZERO.
fn object(events: &[&str]) -> Result<Vec<u8>> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    for (i, event) in events.iter().enumerate() {
        let text = obj.add_section(
            vec![],
            format!("tp_btf/{event}").into_bytes(),
            SectionKind::Text,
        );
        obj.append_section_data(text, &RETURN_ZERO, 8);
        obj.add_symbol(Symbol {
            name: format!("floor{i}").into_bytes(),
            value: 0,
            size: RETURN_ZERO.len() as u64,
            kind: SymbolKind::Text,
            scope: SymbolScope::Dynamic,
            weak: false,
            section: SymbolSection::Section(text),
            flags: SymbolFlags::None,
        });
    }
    let license = obj.add_section(vec![], b"license".to_vec(), SectionKind::Data);
    obj.append_section_data(license, b"GPL\0", 1);
    obj.write().context("writing the empty programs' object")
}
