"""The same `.ort` bytes for the same model: onnxruntime's kernel-type-string table rewritten in a fixed layout.

onnxruntime serializes an InferenceSession as one flatbuffer built back to front: the ``ort_version`` string,
then the Model, then the KernelTypeStrResolver, then the root table. The resolver's entries come from an
absl hash map whose hash seed is a heap address, so although both of its vectors are written sorted by key (their
content is always the same), the tables and strings they point to are laid out in that hash order: two runs give
different bytes in the resolver's region and identical bytes everywhere else.

``canonical_ort`` keeps everything onnxruntime built before the resolver (the Model and the version string, the
tail of the buffer from the Model's lowest byte on) and builds the resolver and the root table again in front of
it with onnxruntime's own generated flatbuffer classes, every table in vector order. Flatbuffer offsets and
alignments count from the buffer's end, so the kept tail stays valid where it is; its largest alignment is 8
(onnxruntime's schema has no wider field), which the rebuilt buffer keeps.
"""

from __future__ import annotations

import flatbuffers
from flatbuffers.number_types import SOffsetTFlags
from onnxruntime.tools.ort_format_model.ort_flatbuffers_py import fbs

ORT_FILE_IDENTIFIER = b"ORTM"
MAX_ALIGNMENT = 8  # the widest scalar of onnxruntime's schema (int64, double)


def canonical_ort(data: bytes) -> bytes:
    """DATA (an .ort file) with its kernel-type-string resolver laid out in the order of its sorted vectors.
    A file not laid out as onnxruntime writes it (the resolver below the Model) is returned unchanged."""
    session = fbs.InferenceSession.InferenceSession.GetRootAs(data, 0)
    model, resolver = session.Model(), session.KernelTypeStrResolver()
    if model is None or resolver is None or not session.OrtVersion():
        return data
    root = session._tab
    version = root.Indirect(root.Pos + root.Offset(4))  # the ort_version string, field 0
    model_vtable = model._tab.Pos - model._tab.Get(SOffsetTFlags, model._tab.Pos)
    kept = min(model._tab.Pos, model_vtable)  # the Model is the last table onnxruntime built before the resolver
    if not resolver._tab.Pos < kept <= version:
        return data

    builder = flatbuffers.Builder(len(data) - kept + 1024)
    builder.head = len(builder.Bytes) - (len(data) - kept)
    builder.Bytes[builder.head :] = data[kept:]
    builder.minalign = MAX_ALIGNMENT
    entries = [_op_entry(builder, resolver.OpKernelTypeStrArgs(i)) for i in range(resolver.OpKernelTypeStrArgsLength())]
    entries_vector = _table_vector(builder, fbs.KernelTypeStrResolver.StartOpKernelTypeStrArgsVector, entries)
    fbs.KernelTypeStrResolver.Start(builder)
    fbs.KernelTypeStrResolver.AddOpKernelTypeStrArgs(builder, entries_vector)
    new_resolver = fbs.KernelTypeStrResolver.End(builder)
    fbs.InferenceSession.Start(builder)
    fbs.InferenceSession.AddOrtVersion(builder, len(data) - version)  # builder offsets count from the end
    fbs.InferenceSession.AddModel(builder, len(data) - model._tab.Pos)
    fbs.InferenceSession.AddKernelTypeStrResolver(builder, new_resolver)
    builder.Finish(fbs.InferenceSession.End(builder), file_identifier=ORT_FILE_IDENTIFIER)
    return bytes(builder.Output())


def _op_entry(builder: flatbuffers.Builder, entry) -> int:
    """One OpIdKernelTypeStrArgsEntry (an op and, per kernel type string, the arguments it names), rebuilt."""
    kernel_type_strs = []
    for j in range(entry.KernelTypeStrArgsLength()):
        type_str = entry.KernelTypeStrArgs(j)
        args = []
        for k in range(type_str.ArgsLength()):
            arg = type_str.Args(k)
            fbs.ArgTypeAndIndex.Start(builder)
            fbs.ArgTypeAndIndex.AddArgType(builder, arg.ArgType())
            fbs.ArgTypeAndIndex.AddIndex(builder, arg.Index())
            args.append(fbs.ArgTypeAndIndex.End(builder))
        name = builder.CreateSharedString(type_str.KernelTypeStr())  # as onnxruntime: one "T" for every op
        args_vector = _table_vector(builder, fbs.KernelTypeStrArgsEntry.StartArgsVector, args)
        fbs.KernelTypeStrArgsEntry.Start(builder)
        fbs.KernelTypeStrArgsEntry.AddKernelTypeStr(builder, name)
        fbs.KernelTypeStrArgsEntry.AddArgs(builder, args_vector)
        kernel_type_strs.append(fbs.KernelTypeStrArgsEntry.End(builder))
    op_id = builder.CreateString(entry.OpId())
    type_strs_vector = _table_vector(
        builder, fbs.OpIdKernelTypeStrArgsEntry.StartKernelTypeStrArgsVector, kernel_type_strs
    )
    fbs.OpIdKernelTypeStrArgsEntry.Start(builder)
    fbs.OpIdKernelTypeStrArgsEntry.AddOpId(builder, op_id)
    fbs.OpIdKernelTypeStrArgsEntry.AddKernelTypeStrArgs(builder, type_strs_vector)
    return fbs.OpIdKernelTypeStrArgsEntry.End(builder)


def _table_vector(builder: flatbuffers.Builder, start, tables: list[int]) -> int:
    start(builder, len(tables))
    for table in reversed(tables):  # prepended: the vector keeps the order it was read in (sorted by key)
        builder.PrependUOffsetTRelative(table)
    return builder.EndVector()
