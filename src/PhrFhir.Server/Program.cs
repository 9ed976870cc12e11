using PhrFhir.Server;

var app = await PhrFhirApp.BuildAsync(args);
await app.RunAsync();
