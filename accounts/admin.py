"""API sessions in the admin: read-only, and revocable."""

from django.contrib import admin, messages
from django.db.models.functions import Now

from accounts.models import RevokeReason, TokenFamily


@admin.register(TokenFamily)
class TokenFamilyAdmin(admin.ModelAdmin):
    list_display = ("user", "created_at", "rotated_at", "expires_at", "revoked_at", "revoke_reason")
    list_filter = ("revoke_reason",)
    list_select_related = ("user",)
    search_fields = ("user__username",)
    ordering = ("-created_at",)
    # The token ids stay out of view: they are all a refresh needs besides the signature.
    fields = ("user", "created_at", "rotated_at", "expires_at", "revoked_at", "revoke_reason")
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Revoke the selected sessions", permissions=["change"])
    def revoke(self, request, queryset):
        revoked = queryset.filter(revoked_at=None).update(revoked_at=Now(), revoke_reason=RevokeReason.ADMIN)
        self.message_user(request, f"Revoked {revoked} session{'s' if revoked != 1 else ''}.", messages.SUCCESS)
