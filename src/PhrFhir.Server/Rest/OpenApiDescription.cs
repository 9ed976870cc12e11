using System.Text;
using Hl7.Fhir.Model;
using Microsoft.OpenApi;
using Microsoft.OpenApi.Extensions;
using Microsoft.OpenApi.Models;
using Swashbuckle.AspNetCore.SwaggerUI;

namespace PhrFhir.Server.Rest;

/// <summary>
/// An OpenAPI 3.0 description of the REST API, generated from the CapabilityStatement (as HAPI FHIR
/// does) — never hand-written, so it lists exactly the types, interactions, search parameters and
/// operations <c>/metadata</c> declares. Served at <c>/api-docs/openapi.json</c>, with Swagger UI at
/// <c>/api-docs</c> for integrators who try requests in a browser.
/// </summary>
public static class OpenApiDescription
{
    public const string DocumentPath = "/api-docs/openapi.json";
    const string FhirJson = "application/fhir+json";
    const string Bearer = "smart";

    public static void Map(WebApplication app)
    {
        // Before routing: /api-docs/index.html would otherwise match the FHIR route /{type}/{id}.
        app.UseSwaggerUI(o =>
        {
            o.RoutePrefix = "api-docs";
            o.DocumentTitle = "PhrFhir API";
            o.SwaggerEndpoint(DocumentPath, "PhrFhir FHIR R4");
            o.SupportedSubmitMethods(SubmitMethod.Get, SubmitMethod.Post, SubmitMethod.Put, SubmitMethod.Delete, SubmitMethod.Patch);
        });
    }

    public static void MapDocument(IEndpointRouteBuilder app) =>
        app.MapGet(DocumentPath, (HttpContext ctx, CapabilityStatementBuilder cs, EndpointDataSource endpoints) =>
        {
            var json = Build(cs.Build(FhirResponse.BaseUrl(ctx.Request)), Routes(endpoints)).SerializeAsJson(OpenApiSpecVersion.OpenApi3_0);
            return Results.Bytes(Encoding.UTF8.GetBytes(json), "application/json");
        }).AllowAnonymous(); // like /metadata: how a client learns the API before it has a token

    /// <summary>The server's routes (pattern and verbs), where the declared operations are looked up.</summary>
    public static List<(string Pattern, string[] Verbs)> Routes(EndpointDataSource endpoints) =>
        [.. endpoints.Endpoints.OfType<RouteEndpoint>().Where(e => e.RoutePattern.RawText is not null)
            .Select(e => (e.RoutePattern.RawText!, e.Metadata.GetMetadata<Microsoft.AspNetCore.Routing.HttpMethodMetadata>()?.HttpMethods.ToArray() ?? []))];

    /// <summary>
    /// The OpenAPI document of <paramref name="cs"/>. Each declared operation is described at every route the
    /// server maps for it (<paramref name="routes"/>: system, type and instance level, GET and POST, and routes
    /// below it such as DELETE Patient/{id}/$share/{link}); without routes, as a type-level POST.
    /// </summary>
    public static OpenApiDocument Build(CapabilityStatement cs, IReadOnlyList<(string Pattern, string[] Verbs)>? routes = null)
    {
        var baseUrl = cs.Implementation?.Url ?? "/";
        var rest = cs.Rest[0];
        var doc = new OpenApiDocument
        {
            Info = new OpenApiInfo
            {
                Title = cs.Implementation?.Description ?? cs.Software?.Name ?? "FHIR server",
                Version = cs.Software?.Version ?? "1",
                Description = "Generated from the server's CapabilityStatement (GET /metadata), FHIR R4 " + cs.FhirVersion?.ToString() + ". " + rest.Security?.Description,
            },
            Servers = [new OpenApiServer { Url = baseUrl }],
            Paths = [],
            Components = new OpenApiComponents(),
        };
        var security = Security(rest);
        if (security is not null)
        {
            doc.Components.SecuritySchemes[Bearer] = security;
            doc.SecurityRequirements.Add(new OpenApiSecurityRequirement
            {
                [new OpenApiSecurityScheme { Reference = new OpenApiReference { Type = ReferenceType.SecurityScheme, Id = Bearer } }] = [],
            });
        }
        doc.Components.Schemas["OperationOutcome"] = ResourceSchema("OperationOutcome");
        doc.Components.Schemas["Bundle"] = ResourceSchema("Bundle");

        foreach (var resource in rest.Resource.Where(r => r.Type is not null))
        {
            var type = resource.Type!;
            doc.Components.Schemas[type] = ResourceSchema(type);
            var interactions = resource.Interaction.Select(i => i.Code).OfType<CapabilityStatement.TypeRestfulInteraction>().ToHashSet();
            var id = PathParameter("id", $"The logical id of the {type}.");

            void Add(string path, OperationType verb, string summary, OpenApiOperation op) => OpenApiDescription.Add(doc, path, verb, type, summary, op);

            if (interactions.Contains(CapabilityStatement.TypeRestfulInteraction.SearchType))
            {
                var search = resource.SearchParam.Where(p => p.Name is not null).Select(p => QueryParameter(p.Name!, p.Documentation, p.Type)).Concat(ResultParameters()).ToList();
                Add($"/{type}", OperationType.Get, $"search {type}", new OpenApiOperation { Parameters = search, Responses = Ok("A searchset Bundle.", "Bundle") });
                Add($"/{type}/_search", OperationType.Post, $"search {type} (parameters in a form body)", new OpenApiOperation
                {
                    RequestBody = new OpenApiRequestBody { Content = { ["application/x-www-form-urlencoded"] = new OpenApiMediaType { Schema = new OpenApiSchema { Type = "object" } } } },
                    Responses = Ok("A searchset Bundle.", "Bundle"),
                });
            }
            if (interactions.Contains(CapabilityStatement.TypeRestfulInteraction.Create))
                Add($"/{type}", OperationType.Post, $"create {type}" + (resource.ConditionalCreate == true ? " (If-None-Exist: conditional create)" : ""), new OpenApiOperation
                {
                    Parameters = resource.ConditionalCreate == true ? [HeaderParameter("If-None-Exist", "Search criteria: no create when exactly one resource matches.")] : [],
                    RequestBody = Body(type),
                    Responses = Created(type),
                });
            if (interactions.Contains(CapabilityStatement.TypeRestfulInteraction.Read))
                Add($"/{type}/{{id}}", OperationType.Get, $"read {type}", new OpenApiOperation { Parameters = [id], Responses = Ok($"The current version of the {type}.", type) });
            if (interactions.Contains(CapabilityStatement.TypeRestfulInteraction.Update))
                Add($"/{type}/{{id}}", OperationType.Put, $"update {type}" + (resource.UpdateCreate == true ? " (or create it with this id)" : ""), new OpenApiOperation
                {
                    Parameters = [id, HeaderParameter("If-Match", "W/\"version\": refused with 412 unless it is the current version.")],
                    RequestBody = Body(type),
                    Responses = Created(type),
                });
            if (interactions.Contains(CapabilityStatement.TypeRestfulInteraction.Patch))
                Add($"/{type}/{{id}}", OperationType.Patch, $"patch {type} (FHIRPath Patch)", new OpenApiOperation
                {
                    Parameters = [id],
                    RequestBody = Body("Parameters"),
                    Responses = Ok($"The patched {type}.", type),
                });
            if (interactions.Contains(CapabilityStatement.TypeRestfulInteraction.Delete))
                Add($"/{type}/{{id}}", OperationType.Delete, $"delete {type}", new OpenApiOperation
                {
                    Parameters = [id],
                    Responses = new OpenApiResponses { ["204"] = new OpenApiResponse { Description = "Deleted (a new version marks the deletion)." } },
                });
            if (interactions.Contains(CapabilityStatement.TypeRestfulInteraction.Vread))
                Add($"/{type}/{{id}}/_history/{{vid}}", OperationType.Get, $"vread {type}", new OpenApiOperation
                {
                    Parameters = [id, PathParameter("vid", "The version id.")],
                    Responses = Ok("That version.", type),
                });
            if (interactions.Contains(CapabilityStatement.TypeRestfulInteraction.HistoryInstance))
                Add($"/{type}/{{id}}/_history", OperationType.Get, $"history of one {type}", new OpenApiOperation { Parameters = [id, .. HistoryParameters()], Responses = Ok("A history Bundle.", "Bundle") });
            if (interactions.Contains(CapabilityStatement.TypeRestfulInteraction.HistoryType))
                Add($"/{type}/_history", OperationType.Get, $"history of every {type}", new OpenApiOperation { Parameters = HistoryParameters(), Responses = Ok("A history Bundle.", "Bundle") });
            foreach (var operation in resource.Operation)
                AddOperation(doc, routes, type, operation);
        }
        foreach (var operation in rest.Operation)
            AddOperation(doc, routes, null, operation);
        SmartHealthLinks(doc);

        var system = rest.Interaction.Select(i => i.Code).OfType<CapabilityStatement.SystemRestfulInteraction>().ToHashSet();
        if (system.Contains(CapabilityStatement.SystemRestfulInteraction.Transaction) || system.Contains(CapabilityStatement.SystemRestfulInteraction.Batch))
            Add(doc, "/", OperationType.Post, "system", "batch or transaction Bundle (also IHE MHD ITI-65 Provide Document Bundle)", new OpenApiOperation
            {
                OperationId = "postBundle",
                RequestBody = Body("Bundle"),
                Responses = Ok("A batch-response or transaction-response Bundle.", "Bundle"),
            });
        if (system.Contains(CapabilityStatement.SystemRestfulInteraction.HistorySystem))
            Add(doc, "/_history", OperationType.Get, "system", "history of everything the requester may see",
                new OpenApiOperation { Parameters = HistoryParameters(), Responses = Ok("A history Bundle.", "Bundle") });
        Add(doc, "/metadata", OperationType.Get, "system", "the CapabilityStatement (no token needed)", new OpenApiOperation
        {
            Security = [new OpenApiSecurityRequirement()], // `[{}]`: no token needed (an empty list would inherit the document's)
            Responses = Ok("The CapabilityStatement this description was generated from.", null),
        });
        return doc;
    }

    /// <summary>
    /// An operation at each route the server maps for it: "/{type}/$name" and "/{type}/{id}/$name" (also their
    /// generic "/{type}/…" forms, as $validate's), anything below them, or "/$name" for a system operation.
    /// </summary>
    static void AddOperation(OpenApiDocument doc, IReadOnlyList<(string Pattern, string[] Verbs)>? routes, string? type, CapabilityStatement.OperationComponent operation)
    {
        var tag = type ?? "system";
        var description = (operation.Documentation ?? "") + (operation.Definition is { } def ? $" Definition: {def}" : "");
        var name = "$" + operation.Name;
        var forms = new List<(string Path, OperationType Verb)>();
        foreach (var (pattern, verbs) in routes ?? [])
        {
            var path = type is not null && pattern.StartsWith("/{type}/", StringComparison.Ordinal) ? "/" + type + pattern["/{type}".Length..] : pattern;
            var segments = path.Split('/');
            var matches = type is null
                ? path == "/" + name
                : segments.Length >= 3 && segments[1] == type && (segments[2] == name || segments.Length >= 4 && segments[2] == "{id}" && segments[3] == name);
            if (!matches) continue;
            foreach (var verb in verbs)
                if (Enum.TryParse<OperationType>(verb, ignoreCase: true, out var v) && !forms.Contains((path, v))) forms.Add((path, v));
        }
        if (routes is null) forms.Add((type is null ? "/" + name : $"/{type}/{name}", OperationType.Post));
        foreach (var (path, verb) in forms)
        {
            var parameters = path.Split('/').Where(s => s.StartsWith('{') && s.EndsWith('}'))
                .Select(s => PathParameter(s[1..^1], s == "{id}" ? $"The logical id of the {type}." : $"The {s[1..^1]}.")).ToList();
            Add(doc, path, verb, tag, $"{name} {(type is null ? "(system)" : "on " + type)}", new OpenApiOperation
            {
                Description = description,
                Parameters = parameters,
                RequestBody = verb is OperationType.Post or OperationType.Put ? Body("Parameters") : null,
                Responses = verb == OperationType.Delete
                    ? new OpenApiResponses { ["204"] = new OpenApiResponse { Description = "Done." } }
                    : Ok("The operation's result.", null),
            });
        }
    }

    /// <summary>
    /// The recipient's side of a SMART Health Link (docs/sharing.md): no FHIR interaction, so not in /metadata,
    /// and no token — the URL is the capability.
    /// </summary>
    static void SmartHealthLinks(OpenApiDocument doc)
    {
        const string Tag = "SMART Health Links";
        var link = PathParameter("id", "The link id (43 characters), the last segment of the shlink payload's url.");
        var json = new OpenApiMediaType { Schema = new OpenApiSchema { Type = "object" } };
        OpenApiResponses Answers(string ok, string type) => new()
        {
            ["200"] = new OpenApiResponse { Description = ok, Content = { [type] = new OpenApiMediaType { Schema = new OpenApiSchema { Type = type == "application/json" ? "object" : "string" } } } },
            ["404"] = new OpenApiResponse { Description = "Not known, expired, revoked or locked (one answer for all)." },
        };
        var noToken = new List<OpenApiSecurityRequirement> { new() };
        var manifest = Answers("The manifest {\"files\": [{contentType, location | embedded}]} (SHL STU1).", "application/json");
        manifest["401"] = new OpenApiResponse { Description = "Wrong or missing passcode: {\"remainingAttempts\": n}.", Content = { ["application/json"] = json } };
        manifest["429"] = new OpenApiResponse { Description = "A long-term link polled too often (Retry-After)." };
        Add(doc, "/shl/{id}", OperationType.Post, Tag, "SHL manifest request", new OpenApiOperation
        {
            Description = "Body {\"recipient\", \"passcode\"?, \"embeddedLengthMax\"?}; each file a compact JWE (alg dir, enc A256GCM).",
            Parameters = [link],
            RequestBody = new OpenApiRequestBody { Required = true, Content = { ["application/json"] = json } },
            Responses = manifest,
            Security = noToken,
        });
        Add(doc, "/shl/{id}", OperationType.Get, Tag, "SHL direct file (flag U)", new OpenApiOperation
        {
            Parameters = [link, new OpenApiParameter { Name = "recipient", In = ParameterLocation.Query, Required = true, Schema = new OpenApiSchema { Type = "string" } }],
            Responses = Answers("The link's one file, a compact JWE.", "application/jose"),
            Security = noToken,
        });
        Add(doc, "/shl/file/{token}", OperationType.Get, Tag, "SHL file location (at most an hour; VHL: ITI-68 bytes)", new OpenApiOperation
        {
            Parameters = [PathParameter("token", "The location token a manifest or VHL search handed out.")],
            Responses = Answers("The file's JWE (application/jose), or for a VHL location the document's bytes.", "application/jose"),
            Security = noToken,
        });
    }

    /// <summary>One operation at a path: its summary, tag, an operationId from the path unless it has one, and the OperationOutcome of a failure.</summary>
    static void Add(OpenApiDocument doc, string path, OperationType verb, string tag, string summary, OpenApiOperation op)
    {
        if (!doc.Paths.TryGetValue(path, out var item)) doc.Paths[path] = item = new OpenApiPathItem();
        op.Summary = summary;
        op.Tags = [new OpenApiTag { Name = tag }];
        op.OperationId ??= verb.ToString().ToLowerInvariant() + Identifier(path);
        op.Responses.TryAdd("default", Response("An OperationOutcome saying what failed.", "OperationOutcome"));
        item.Operations[verb] = op;
    }

    /// <summary>OAuth 2.0 from the SMART oauth-uris extension of rest.security, when the server publishes one.</summary>
    static OpenApiSecurityScheme? Security(CapabilityStatement.RestComponent rest)
    {
        var uris = rest.Security?.GetExtension("http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris");
        string? Uri(string name) => (uris?.GetExtension(name)?.Value as FhirUri)?.Value;
        if (Uri("token") is not { } token)
            return new OpenApiSecurityScheme { Type = SecuritySchemeType.Http, Scheme = "bearer", BearerFormat = "JWT", Description = rest.Security?.Description };
        var flows = new OpenApiOAuthFlows { ClientCredentials = new OpenApiOAuthFlow { TokenUrl = new System.Uri(token) } };
        if (Uri("authorize") is { } authorize)
            flows.AuthorizationCode = new OpenApiOAuthFlow { AuthorizationUrl = new System.Uri(authorize), TokenUrl = new System.Uri(token) };
        return new OpenApiSecurityScheme { Type = SecuritySchemeType.OAuth2, Flows = flows, Description = rest.Security?.Description };
    }

    static OpenApiSchema ResourceSchema(string type) => new()
    {
        Type = "object",
        Description = $"A FHIR R4 {type} (http://hl7.org/fhir/R4/{type.ToLowerInvariant()}.html), as application/fhir+json.",
        Required = new HashSet<string> { "resourceType" },
        Properties = { ["resourceType"] = new OpenApiSchema { Type = "string", Enum = [new Microsoft.OpenApi.Any.OpenApiString(type)] } },
        AdditionalPropertiesAllowed = true,
    };

    static OpenApiSchema Ref(string type) => new() { Reference = new OpenApiReference { Type = ReferenceType.Schema, Id = type } };

    static OpenApiRequestBody Body(string type) => new()
    {
        Required = true,
        Content =
        {
            [FhirJson] = new OpenApiMediaType { Schema = type is "Parameters" ? new OpenApiSchema { Type = "object" } : Ref(type) },
            ["application/fhir+xml"] = new OpenApiMediaType { Schema = new OpenApiSchema { Type = "string" } },
        },
    };

    static OpenApiResponse Response(string description, string? type) => new()
    {
        Description = description,
        Content = { [FhirJson] = new OpenApiMediaType { Schema = type is null ? new OpenApiSchema { Type = "object" } : Ref(type) } },
    };

    static OpenApiResponses Ok(string description, string? type) => new() { ["200"] = Response(description, type) };

    static OpenApiResponses Created(string type) => new()
    {
        ["200"] = Response($"The {type} (updated, or found by If-None-Exist).", type),
        ["201"] = Response($"The {type} created (Location header).", type),
    };

    static OpenApiParameter PathParameter(string name, string description) =>
        new() { Name = name, In = ParameterLocation.Path, Required = true, Description = description, Schema = new OpenApiSchema { Type = "string" } };

    static OpenApiParameter HeaderParameter(string name, string description) =>
        new() { Name = name, In = ParameterLocation.Header, Required = false, Description = description, Schema = new OpenApiSchema { Type = "string" } };

    static OpenApiParameter QueryParameter(string name, string? description, SearchParamType? type) => new()
    {
        Name = name,
        In = ParameterLocation.Query,
        Required = false,
        Description = $"{type?.ToString().ToLowerInvariant()} search parameter. {description}".Trim(),
        Schema = new OpenApiSchema { Type = "string" },
    };

    static IEnumerable<OpenApiParameter> ResultParameters() =>
    [
        QueryParameter("_count", "Page size.", null),
        QueryParameter("_sort", "Comma-separated parameters, '-' for descending.", null),
        QueryParameter("_include", "Type:parameter[:target] to include.", null),
        QueryParameter("_revinclude", "Type:parameter[:target] to include resources that refer to the matches.", null),
        QueryParameter("_total", "none | estimate | accurate.", null),
        QueryParameter("_summary", "true | count | ...", null),
        QueryParameter("_elements", "Comma-separated elements to return.", null),
    ];

    static List<OpenApiParameter> HistoryParameters() =>
        [QueryParameter("_since", "Only versions since this instant.", null), QueryParameter("_count", "Page size.", null)];

    // operationId: letters and digits from the path (/Patient/{id}/_history → PatientIdHistory).
    static string Identifier(string path)
    {
        var sb = new StringBuilder();
        var upper = true;
        foreach (var c in path)
        {
            if (!char.IsAsciiLetterOrDigit(c)) { upper = true; continue; }
            sb.Append(upper ? char.ToUpperInvariant(c) : c);
            upper = false;
        }
        return sb.ToString();
    }
}
