# Decodes a gzipped pprof profile with the protobuf runtime, from a schema built here
# after pprof's profile.proto (field numbers and types as that file gives them), and
# prints what it holds as JSON: an independent reader of what crashtrace writes.
import gzip
import json
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto
MESSAGES = {
    "Profile": [
        ("sample_type", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, "ValueType"),
        ("sample", 2, F.TYPE_MESSAGE, F.LABEL_REPEATED, "Sample"),
        ("mapping", 3, F.TYPE_MESSAGE, F.LABEL_REPEATED, "Mapping"),
        ("location", 4, F.TYPE_MESSAGE, F.LABEL_REPEATED, "Location"),
        ("function", 5, F.TYPE_MESSAGE, F.LABEL_REPEATED, "Function"),
        ("string_table", 6, F.TYPE_STRING, F.LABEL_REPEATED, None),
        ("time_nanos", 9, F.TYPE_INT64, F.LABEL_OPTIONAL, None),
        ("duration_nanos", 10, F.TYPE_INT64, F.LABEL_OPTIONAL, None),
        ("period", 12, F.TYPE_INT64, F.LABEL_OPTIONAL, None),
    ],
    "ValueType": [
        ("type", 1, F.TYPE_INT64, F.LABEL_OPTIONAL, None),
        ("unit", 2, F.TYPE_INT64, F.LABEL_OPTIONAL, None),
    ],
    "Sample": [
        ("location_id", 1, F.TYPE_UINT64, F.LABEL_REPEATED, None),
        ("value", 2, F.TYPE_INT64, F.LABEL_REPEATED, None),
        ("label", 3, F.TYPE_MESSAGE, F.LABEL_REPEATED, "Label"),
    ],
    "Label": [
        ("key", 1, F.TYPE_INT64, F.LABEL_OPTIONAL, None),
        ("str", 2, F.TYPE_INT64, F.LABEL_OPTIONAL, None),
        ("num", 3, F.TYPE_INT64, F.LABEL_OPTIONAL, None),
    ],
    "Mapping": [
        ("id", 1, F.TYPE_UINT64, F.LABEL_OPTIONAL, None),
        ("memory_start", 2, F.TYPE_UINT64, F.LABEL_OPTIONAL, None),
        ("memory_limit", 3, F.TYPE_UINT64, F.LABEL_OPTIONAL, None),
        ("file_offset", 4, F.TYPE_UINT64, F.LABEL_OPTIONAL, None),
        ("filename", 5, F.TYPE_INT64, F.LABEL_OPTIONAL, None),
        ("build_id", 6, F.TYPE_INT64, F.LABEL_OPTIONAL, None),
    ],
    "Location": [
        ("id", 1, F.TYPE_UINT64, F.LABEL_OPTIONAL, None),
        ("mapping_id", 2, F.TYPE_UINT64, F.LABEL_OPTIONAL, None),
        ("address", 3, F.TYPE_UINT64, F.LABEL_OPTIONAL, None),
        ("line", 4, F.TYPE_MESSAGE, F.LABEL_REPEATED, "Line"),
    ],
    "Line": [
        ("function_id", 1, F.TYPE_UINT64, F.LABEL_OPTIONAL, None),
        ("line", 2, F.TYPE_INT64, F.LABEL_OPTIONAL, None),
    ],
    "Function": [
        ("id", 1, F.TYPE_UINT64, F.LABEL_OPTIONAL, None),
        ("name", 2, F.TYPE_INT64, F.LABEL_OPTIONAL, None),
        ("system_name", 3, F.TYPE_INT64, F.LABEL_OPTIONAL, None),
        ("filename", 4, F.TYPE_INT64, F.LABEL_OPTIONAL, None),
    ],
}


def profile_class():
    fd = descriptor_pb2.FileDescriptorProto(
        name="crashtrace_test_profile.proto", package="perftools.profiles", syntax="proto3"
    )
    for name, fields in MESSAGES.items():
        m = fd.message_type.add(name=name)
        for fname, num, ftype, label, tname in fields:
            f = m.field.add(name=fname, number=num, type=ftype, label=label)
            if tname:
                f.type_name = ".perftools.profiles." + tname
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    desc = pool.FindMessageTypeByName("perftools.profiles.Profile")
    return message_factory.GetMessageClass(desc)


def main(path):
    p = profile_class()()
    p.ParseFromString(gzip.decompress(open(path, "rb").read()))
    s = p.string_table
    funcs = {f.id: f for f in p.function}
    locs = {l.id: l for l in p.location}
    maps = {m.id: m for m in p.mapping}
    samples = []
    for smp in p.sample:
        stack = []
        for lid in smp.location_id:
            loc = locs[lid]
            entry = {
                "functions": [s[funcs[ln.function_id].name] for ln in loc.line],
                "files": [s[funcs[ln.function_id].filename] for ln in loc.line],
                "lines": [ln.line for ln in loc.line],
                "address": loc.address,
            }
            if loc.mapping_id:
                m = maps[loc.mapping_id]
                entry["module"] = s[m.filename]
                entry["build_id"] = s[m.build_id]
            stack.append(entry)
        labels = {s[l.key]: (s[l.str] if l.str else l.num) for l in smp.label}
        samples.append({"value": list(smp.value), "stack": stack, "labels": labels})
    out = {
        "sample_type": [[s[t.type], s[t.unit]] for t in p.sample_type],
        "samples": samples,
        "duration_nanos": p.duration_nanos,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
