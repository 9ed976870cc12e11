using Hl7.Fhir.Model;

namespace PhrFhir.Server.Subscriptions;

/// <summary>
/// What GET /metadata claims for Subscriptions: the backport IG's R4 server CapabilityStatement and the
/// DSUBm Resource Notification Broker and Publisher (basic: DocumentReference and SubmissionSet topics,
/// and the Basic Folder Subscription option), the topics offered (backport
/// capabilitystatement-subscriptiontopic-canonical) and the operations $status and $events.
/// </summary>
public static class SubscriptionCapabilities
{
    public static IReadOnlyList<string> Instantiates { get; } =
    [
        "http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server-r4",
        "https://profiles.ihe.net/ITI/DSUBm/CapabilityStatement/IHE.DSUBm.ResourceNotificationBroker",
        "https://profiles.ihe.net/ITI/DSUBm/CapabilityStatement/IHE.DSUBm.ResourceNotificationPublisher",
        "https://profiles.ihe.net/ITI/DSUBm/CapabilityStatement/IHE.DSUBm.ResourceNotificationBroker.Folder.Basic",
    ];

    public static void Declare(CapabilityStatement.ResourceComponent subscription, SubscriptionTopics topics)
    {
        // Not in supportedProfile: that lists what the validator enforces on write, and the backport profile's
        // rules are checked by SubscriptionRules, not by validation against its package.
        foreach (var topic in topics.All)
            subscription.Extension.Add(new Extension(SubscriptionRules.Backport + "capabilitystatement-subscriptiontopic-canonical", new Canonical(topic.Url)));
        subscription.Operation.Add(new CapabilityStatement.OperationComponent
        {
            Name = "status",
            Definition = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status",
            Documentation = "GET /Subscription/{id}/$status, or /Subscription/$status?id=…: events-since-subscription-start, status and the last delivery error.",
        });
        subscription.Operation.Add(new CapabilityStatement.OperationComponent
        {
            Name = "events",
            Definition = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events",
            Documentation = "GET /Subscription/{id}/$events?eventsSinceNumber=&eventsUntilNumber=&content= (or /Subscription/$events?id=…): the events kept, as a notification Bundle.",
        });
    }
}
