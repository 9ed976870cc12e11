using System.Collections;
using Hl7.Fhir.FhirPath;
using Hl7.Fhir.Model;
using Hl7.FhirPath;
using PhrFhir.Storage;

namespace PhrFhir.Server.Rest;

/// <summary>
/// FHIRPath Patch (R4 fhirpatch.html): a Parameters resource of `operation`s (add, insert, delete,
/// replace, move) applied to a copy of the current resource. The SDK has no patch engine; this uses
/// its FhirPath compiler (which reports each selected node's parent and property) and its element
/// setters. MHD uses it to mark a replaced DocumentReference `superseded` inside ITI-65.
/// </summary>
public static class FhirPatch
{
    static readonly FhirPathCompiler Compiler = new();

    public static Resource Apply(Resource current, Parameters patch)
    {
        var result = (Resource)current.DeepCopy();
        var index = 0;
        foreach (var op in patch.Parameter)
        {
            var at = $"Parameters.parameter[{index++}]";
            if (op.Name != "operation")
                throw FhirError.BadRequest($"{at}: every parameter of a FHIRPath Patch is named 'operation', got '{op.Name}'.", at);
            string? Part(string name) => op.Part.FirstOrDefault(p => p.Name == name)?.Value switch
            {
                null => null,
                PrimitiveType p => p.ToString(),
                _ => null,
            };
            var type = Part("type") ?? throw FhirError.BadRequest($"{at}: the operation has no type.", at);
            var path = Part("path") ?? throw FhirError.BadRequest($"{at}: the operation has no path.", at);
            var value = op.Part.FirstOrDefault(p => p.Name == "value")?.Value;
            var nodes = Select(result, path, at);
            switch (type)
            {
                case "replace":
                    var target = Single(nodes, path, at);
                    Set(target.Parent!.Poco, target.Name!, target.Index, Convert(target.Parent.Poco, target.Name!, value, at));
                    break;
                case "delete":
                    if (nodes.Count > 1) throw FhirError.BadRequest($"{at}: delete path '{path}' matches {nodes.Count} elements; it must match at most one.", at);
                    if (nodes.Count == 1) Remove(nodes[0]);
                    break;
                case "add":
                    var container = Single(nodes, path, at).Poco;
                    var name = Part("name") ?? throw FhirError.BadRequest($"{at}: add needs a name.", at);
                    var converted = Convert(container, name, value, at);
                    if (container.TryGetValue(name, out var existing) && existing is IList list) list.Add(converted);
                    else if (existing is null) container.SetValue(name, IsList(container, name) ? NewList(container, name, converted) : converted);
                    else throw FhirError.BadRequest($"{at}: '{path}.{name}' already has a value; use replace.", at);
                    break;
                default:
                    throw FhirError.NotSupported($"{at}: patch operation '{type}' is not supported yet (add, delete and replace are; add appends to a list).", at);
            }
        }
        return result;
    }

    static List<PocoNode> Select(Resource r, string path, string at)
    {
        try
        {
            return Compiler.Compile(path).Invoke([new PocoNode(r, null, null, null)], new FhirEvaluationContext()).ToList();
        }
        catch (Exception e) when (e is FormatException or InvalidOperationException or ArgumentException)
        {
            throw FhirError.BadRequest($"{at}: '{path}' is not a FHIRPath expression this server can evaluate: {e.Message}", at);
        }
    }

    static PocoNode Single(List<PocoNode> nodes, string path, string at) => nodes.Count == 1 ? nodes[0]
        : throw new FhirError(System.Net.HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.Processing,
            $"{at}: path '{path}' matches {nodes.Count} elements; it must match exactly one. (パスが一つの要素を指していません)", at);

    static void Set(Base parent, string name, int? index, Base value)
    {
        if (index is { } i && parent.TryGetValue(name, out var v) && v is IList list) list[i] = value;
        else parent.SetValue(name, value);
    }

    static void Remove(PocoNode node)
    {
        var parent = node.Parent!.Poco;
        if (node.Index is { } i && parent.TryGetValue(node.Name!, out var v) && v is IList list) list.RemoveAt(i);
        else parent.SetValue(node.Name!, null!);
    }

    static bool IsList(Base container, string name) =>
        ModelInfo.ModelInspector.FindOrImportClassMapping(container.GetType())?.FindMappedElementByName(name)?.IsCollection == true;

    static object NewList(Base container, string name, Base first)
    {
        var mapping = ModelInfo.ModelInspector.FindOrImportClassMapping(container.GetType())!.FindMappedElementByName(name)!;
        var list = (IList)Activator.CreateInstance(typeof(List<>).MakeGenericType(mapping.ImplementingType))!;
        list.Add(first);
        return list;
    }

    /// <summary>value[x] as the element's declared type: a `code` for a `Code&lt;T&gt;` property, etc.</summary>
    static Base Convert(Base container, string name, DataType? value, string at)
    {
        if (value is null) throw FhirError.BadRequest($"{at}: the operation needs a value.", at);
        var mapping = ModelInfo.ModelInspector.FindOrImportClassMapping(container.GetType())?.FindMappedElementByName(name)
            ?? throw FhirError.BadRequest($"{at}: {container.TypeName} has no element '{name}'.", at);
        var target = mapping.ImplementingType;
        if (target.IsInstanceOfType(value)) return value;
        if (value is PrimitiveType p && typeof(PrimitiveType).IsAssignableFrom(target) && !target.IsAbstract)
        {
            var converted = (PrimitiveType)Activator.CreateInstance(target)!;
            converted.JsonValue = p.JsonValue;
            return converted;
        }
        throw FhirError.BadRequest($"{at}: a {value.TypeName} cannot be the value of {container.TypeName}.{name}.", at);
    }
}
