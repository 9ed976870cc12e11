using System.Text.RegularExpressions;
using Hl7.Fhir.Model;

namespace PhrFhir.Validation.Cache;

/// <summary>
/// Load-time repairs of two slicing shapes the HL7 validator reads and Firely 3.6 refuses, both in
/// <c>JP_Observation_LabResult_eCS</c> (JP-CLINS 1.5.2), which made every lab result unusable. Applied once when a
/// family's pack is built (<see cref="FamilyConformance"/>); docs/validation.md, "JP_Observation_LabResult_eCS".
/// <para><b>Slice names with '/' that are not re-slices</b> (<see cref="UnnestFalseReslices"/>): the profile names
/// slices <c>coreLaboJLAC10/alb</c>, <c>infectionLaboJLAC11/tpquant</c>, … although no slice <c>coreLaboJLAC10</c>
/// exists. In FHIR '/' in a slice name marks a re-slice (ElementDefinition.sliceName, profiling.html#reslicing);
/// Firely takes them for re-slices of a missing slice and fails ("invalid or incomplete slice at element
/// Observation.code.coding"). They are plain slices of <c>code.coding</c> (the IG publisher's snapshot lists
/// them as such): renamed with '_' for '/' (<c>coreLaboJLAC10_alb</c>), ids with them.</para>
/// <para><b>Discriminators a slice leaves unconstrained</b> (<see cref="Relax"/>): makes slicings with several
/// discriminators compile when a slice leaves one value/pattern discriminator unconstrained, the way the HL7
/// validator reads them. <c>JP_Observation_LabResult_eCS</c> (JP-CLINS 1.5.2)
/// slices <c>Observation.code.coding</c> by value on <c>system</c> and on <c>display</c>; its slice
/// <c>jlac10LaboCode</c> fixes <c>system</c> but not <c>display</c> (any JLAC10 name). The HL7 validator
/// (InstanceValidator.sliceMatches) builds a slice's condition from the discriminators it can evaluate for
/// that slice and refuses only when none can be ("Could not match any discriminators … None of the
/// discriminator(s) have fixed value, binding or existence assertions"). Firely 3.6
/// (DiscriminatorFactory.buildCombinedDiscriminator) throws for the whole profile instead, so every
/// lab result was refused unchecked.</para>
/// </summary>
/// <remarks>
/// The rewrite, applied once when a family's pack is built: the unconstrained discriminator target of such a
/// slice gets a binding of strength <c>example</c> without a value set (marked in its description). Firely then
/// accepts the discriminator and builds no condition from it (no fixed, pattern or value set: always true),
/// and no check of the element's content either (it builds a binding check only from a value set). The
/// slice matches on its other discriminators, exactly the HL7 reading. A slicing none of whose discriminators
/// is constrained for a slice is left alone: the profile stays unusable, as it is for the HL7 validator.
/// </remarks>
internal static partial class SlicingRepairs
{
    public const string Marker =
        "Not part of the IG: added by PhrFhir (docs/validation.md, 'JP_Observation_LabResult_eCS') so that Firely evaluates this slice " +
        "on its other discriminators, as the HL7 validator does; constrains nothing.";

    /// <summary>Renames, in place, slices whose '/' names a parent slice that does not exist; returns the old names.</summary>
    public static List<string> UnnestFalseReslices(StructureDefinition profile)
    {
        var renamed = new List<string>();
        var elements = profile.Snapshot?.Element;
        if (elements is null) return renamed;
        var sliceNames = elements.Where(e => e.SliceName is not null).Select(e => (e.Path, e.SliceName)).ToHashSet();
        foreach (var slice in elements.Where(e => e.SliceName?.Contains('/', StringComparison.Ordinal) == true && e.ElementId is not null).ToList())
        {
            var name = slice.SliceName!;
            if (sliceNames.Contains((slice.Path, name[..name.LastIndexOf('/')]))) continue; // a real re-slice
            var oldId = slice.ElementId!;
            var newId = oldId[..^name.Length] + name.Replace('/', '_');
            foreach (var e in elements.Where(e => e.ElementId is { } id && (id == oldId || id.StartsWith(oldId + ".", StringComparison.Ordinal) || id.StartsWith(oldId + ":", StringComparison.Ordinal))))
                e.ElementId = newId + e.ElementId![oldId.Length..];
            slice.SliceName = name.Replace('/', '_');
            renamed.Add(name);
        }
        return renamed;
    }

    /// <summary>Rewrites the snapshot of <paramref name="profile"/> in place; returns the element ids it marked.</summary>
    public static List<string> Relax(StructureDefinition profile)
    {
        var marked = new List<string>();
        var elements = profile.Snapshot?.Element;
        if (elements is null) return marked;
        var byId = elements.Where(e => e.ElementId is not null).GroupBy(e => e.ElementId, StringComparer.Ordinal)
            .ToDictionary(g => g.Key!, g => g.First(), StringComparer.Ordinal);
        foreach (var sliced in elements.Where(e => e.Slicing?.Discriminator.Count > 1 && e.ElementId is not null))
        {
            var discriminators = sliced.Slicing!.Discriminator;
            if (discriminators.Any(d => d.Type is ElementDefinition.DiscriminatorType.Value or ElementDefinition.DiscriminatorType.Pattern
                                        && !SimplePath().IsMatch(d.Path ?? "")))
                continue; // resolve(), extension(…), [x]: not read here; Firely decides on its own
            var slices = elements.Where(e => e.Path == sliced.Path && e.SliceName is not null && e.ElementId == $"{sliced.ElementId}:{e.SliceName}");
            foreach (var slice in slices)
            {
                var targets = discriminators.Select(d => (Discriminator: d, Target: d.Path == "$this" ? slice : byId.GetValueOrDefault($"{slice.ElementId}.{d.Path}"))).ToList();
                bool ValueLike(ElementDefinition.DiscriminatorComponent d) =>
                    d.Type is ElementDefinition.DiscriminatorType.Value or ElementDefinition.DiscriminatorType.Pattern;
                bool Constrained(ElementDefinition? e) => e is not null && (e.Fixed is not null || e.Pattern is not null || e.Binding is not null);
                var unconstrained = targets.Where(t => ValueLike(t.Discriminator) && t.Target is not null && !Constrained(t.Target)).ToList();
                if (unconstrained.Count == 0) continue;
                if (!targets.Any(t => !ValueLike(t.Discriminator) || Constrained(t.Target))) continue; // nothing to match on: HL7 refuses too
                foreach (var (_, target) in unconstrained)
                {
                    target!.Binding = new ElementDefinition.ElementDefinitionBindingComponent
                    {
                        Strength = BindingStrength.Example,
                        Description = Marker,
                    };
                    marked.Add(target.ElementId ?? target.Path ?? "");
                }
            }
        }
        return marked;
    }

    // A discriminator path of child names, or $this.
    [GeneratedRegex(@"^(\$this|[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*)$")]
    private static partial Regex SimplePath();
}
